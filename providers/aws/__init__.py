"""The AWS provider: Lambda functions (provider.py) with dependencies packaged for
Lambda's platform (lambda_package.py, on the provider-neutral deployer/packaging.py).
Needs ``pip install 'deployer[aws]'``."""

"""Code that runs INSIDE the deployed function.

Shipped into every bundle as the package ``deployer_runtime`` and installed with
the library as ``deployer.runtimes``. It imports only the standard library,
cloudpickle, pyarrow and pandas — never ``deployer`` — and uses relative imports
so it works under either name.
"""

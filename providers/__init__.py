"""One module per provider, each implementing ``deployer.providers.base.Provider``.

Looked up by name in ``deployer.registry``; cloud SDKs are imported lazily.
"""

"""A local package for the tests of deployer.capture.

It lives outside site-packages and no installed distribution provides it, so
capture() ships it as source instead of listing it as a requirement.
"""

"""Integrations with training frameworks, one optional module each.

Nothing here is imported by ``import forgetless``; import the module you need, which needs its extra:

- :mod:`forgetless.integrations.lightning`: ``EWCCallback`` for Lightning (``pip install 'forgetless[lightning]'``).
"""

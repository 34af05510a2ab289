"""Dataset sources. Every module here registers one or more datasets when imported; this package
imports them all, so adding a dataset is adding a module here."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

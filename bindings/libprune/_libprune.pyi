# The compiled core, as the private Python modules of this package see it; the public names are
# typed in __init__.pyi.
from typing import Any

def __getattr__(name: str) -> Any: ...

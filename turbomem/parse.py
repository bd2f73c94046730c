"""Alias of :mod:`turbomem.packet.parse` (its home since the layout move; see CHANGELOG.md).

``import turbomem.parse`` gives the very same module object, so every name
(and any monkeypatching) is shared with the new home.
"""

import sys

from turbomem.packet import parse as _home

sys.modules[__name__] = _home

"""Alias of :mod:`turbomem.packet.io` (its home since the layout move; see CHANGELOG.md).

``import turbomem.net`` gives the very same module object, so every name
(and any monkeypatching) is shared with the new home.
"""

import sys

from turbomem.packet import io as _home

sys.modules[__name__] = _home

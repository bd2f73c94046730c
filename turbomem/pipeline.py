"""Alias of :mod:`turbomem.packet.pipeline` (its home since the layout move; see CHANGELOG.md).

``import turbomem.pipeline`` gives the very same module object, so every name
(and any monkeypatching) is shared with the new home.
"""

import sys

from turbomem.packet import pipeline as _home

sys.modules[__name__] = _home

"""Type stubs for turbomem/packet/_pcapwalk.pyx (the compiled pcap record walk)."""

import numpy as np
import numpy.typing as npt

from turbomem._core import Pool

def copy_records(
    buf: npt.NDArray[np.uint8],
    pos: int,
    end: int,
    pool: Pool,
    handles: npt.NDArray[np.uint32],
    first: int,
    limit: int,
    swapped: bool,
    offsets: npt.NDArray[np.intp],
) -> tuple[int, int]:
    """Copy whole records from ``buf[pos:end]`` into pool objects; returns (records copied, new pos)."""

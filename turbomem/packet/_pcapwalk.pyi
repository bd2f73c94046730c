from turbomem._core import Pool

def copy_records(buf, pos: int, end: int, pool: Pool, handles, first: int, limit: int, swapped: bool,
                 offsets) -> tuple[int, int]: ...

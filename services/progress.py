"""The console's progress bars, all alike: counts of things with their plural,
`replay: 100%|██████████| 9/9 events [00:00<00:00, 1.2 events/s]`.

tqdm's own layout names the unit only in the rate (`9/9 [..., 1.2 events/s]`), and
`unit_scale` turns counts into `9.00/9.00`; the bars here are counts, unscaled, and
say what they count."""

from __future__ import annotations

from typing import Any, TextIO

from tqdm import tqdm

BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt}{unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def progress(total: int, unit: str, desc: str, out: TextIO, *, quiet: bool = False) -> tqdm[Any]:
    """A bar of `total` `unit` (a plural: "events", "rows") written to `out`."""
    return tqdm(
        total=total,
        unit=f" {unit}",
        unit_scale=False,
        bar_format=BAR_FORMAT,
        desc=desc,
        file=out,
        disable=quiet,
        dynamic_ncols=True,
        mininterval=0.5,
    )

"""Qdrant point ids as one line of keys, and where to cut it into chains of about one size.

Qdrant orders points by id, every unsigned 64-bit integer before every UUID, UUIDs by
their 16 bytes (``ExtendedPointId``'s derived ``Ord`` in ``lib/segment/src/types.rs``), and
a scroll starts at any id, present or not. So an id is a *key* on one line (an integer
is itself, a UUID is ``2**64`` plus its 128-bit number), a range of keys is a chain that
can be scrolled apart from the others, and disjoint ranges that cover the line hold every
point exactly once, whatever ids the collection has.

Where to cut the line is found by probes: a probe scrolls a few ids (no payload, no
vectors) from a chosen key, and so learns every point between that key and the last id
it saw (and that there is none in between it and the first). Between what probes saw
the points are estimated from the density at both ends; where the densities disagree
(the end of a run of dense ids, a cluster of UUIDs), more probes look closer, in a few
rounds of probes sent together. The collection's exact count bounds how far a dense run
can reach. The cuts are the estimated quantiles: the estimate only decides how evenly the
points are shared, never whether one is read.
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: The key of the smallest UUID: every integer id's key is below it.
UUID_KEYS = 1 << 64
#: One past the largest key (the largest UUID's).
KEYS_END = UUID_KEYS + (1 << 128)

PointId = int | str

#: Ids each probe scrolls: enough to measure the density of ids where it looks (random
#: ids: within about 10%), and still a small answer (about 5 kB of UUIDs).
PROBE_IDS = 100
#: Probes spent on one split, at most, and rounds of probes sent together (each round
#: costs one round trip).
MAX_PROBES = 320
MAX_ROUNDS = 8
#: Probes placed in one stretch whose count is uncertain, per round.
PROBES_PER_GAP = 8


def point_key(point_id: PointId) -> int:
    """The key of a point id (an ``int``, or a UUID in any spelling Qdrant accepts)."""
    if isinstance(point_id, int):
        return point_id
    return UUID_KEYS + uuid.UUID(point_id).int


def key_point(key: int) -> PointId:
    """The point id of a key: an integer, or a UUID in its canonical text."""
    return key if key < UUID_KEYS else str(uuid.UUID(int=key - UUID_KEYS))


@dataclass(frozen=True, slots=True)
class Probe:
    """What a scroll of a few ids from key ``at`` saw: the keys of the points from ``at``
    on, in order (the scroll's next page offset included, a point too), and whether the
    collection ends after them."""

    at: int
    keys: tuple[int, ...]
    last: bool

    @property
    def end(self) -> int:
        """One past the keys this probe knows every point of."""
        return KEYS_END if self.last or not self.keys else self.keys[-1] + 1


#: Probes the keys given, together, and returns what each saw.
ProbeMany = Callable[[Sequence[int]], Sequence[Probe]]


@dataclass(frozen=True, slots=True)
class _Gap:
    """Keys ``start`` to ``stop`` (exclusive) that no probe saw, and the density of ids
    (points per key) just before and just after them."""

    start: int
    stop: int
    before: float
    after: float

    @property
    def raw_estimate(self) -> float:
        return (self.stop - self.start) * (self.before + self.after) / 2


class _Survey:
    """What the probes so far saw: the stretches of keys whose points are all known."""

    def __init__(self) -> None:
        self.probes: list[Probe] = []
        self.known: list[int] = []  # every point key a probe saw, sorted
        self.covered: list[tuple[int, int]] = []  # merged [start, end) stretches

    def add(self, probes: Sequence[Probe]) -> None:
        self.probes += probes
        self.known = sorted({k for probe in self.probes for k in probe.keys})
        covered: list[tuple[int, int]] = []
        for probe in sorted(self.probes, key=lambda p: p.at):
            start, end = probe.at, probe.end
            if covered and start <= covered[-1][1]:
                covered[-1] = (covered[-1][0], max(covered[-1][1], end))
            else:
                covered.append((start, end))
        self.covered = covered

    def gaps(self) -> list[_Gap]:
        gaps = []
        for (_, start), (stop, _) in zip(self.covered, self.covered[1:], strict=False):
            gaps.append(_Gap(start, stop, self._density_before(start), self._density_after(stop)))
        end = self.covered[-1][1] if self.covered else 0
        if end < KEYS_END:  # after the last probe's ids, up to where the ids end
            gaps.append(_Gap(end, KEYS_END, self._density_before(end), 0.0))
        return gaps

    def _density_before(self, key: int) -> float:
        """Points per key among the known points just before ``key`` (the end of a stretch
        a probe saw whole)."""
        i = bisect.bisect_left(self.known, key)
        nearest = self.known[max(0, i - PROBE_IDS) : i]
        if len(nearest) >= 2 and nearest[-1] > nearest[0]:
            return (len(nearest) - 1) / (nearest[-1] - nearest[0])
        return 0.0 if not nearest else 1.0 / max(1, key - nearest[0])

    def _density_after(self, key: int) -> float:
        """Points per key from ``key`` (where a probe started) to the points it saw."""
        i = bisect.bisect_left(self.known, key)
        nearest = self.known[i : i + PROBE_IDS]
        if not nearest:
            return 0.0
        return len(nearest) / (nearest[-1] - key + 1)


def first_probes(count: int) -> list[int]:
    """Where the first round looks: the start of each kind of id, integers at growing
    distances and all along their range (ids 0..N-1, ids spread over 63 bits), just
    before and after ``count`` (ids 0..N-1 and 1..N end there), and the UUIDs evenly."""
    keys = {0, UUID_KEYS}
    keys |= {8**j for j in range(1, 21)}
    keys |= {i << 60 for i in range(1, 16)}
    keys |= {k for k in (count - 1, count, count + 1) if 0 <= k < UUID_KEYS}
    keys |= {UUID_KEYS + (i << 124) for i in range(1, 16)}
    return sorted(keys)


def cuts(count: int, chains: int, probe: ProbeMany) -> list[int]:
    """Keys that cut the collection of ``count`` points into up to ``chains`` ranges of
    about as many points each: ascending, each above 0 (the first range starts at the
    beginning, the last ends at the end)."""
    survey = _Survey()
    survey.add(probe(first_probes(count)))
    tolerance = count / (4 * chains)  # a quarter of a chain's share
    for _ in range(MAX_ROUNDS - 1):
        budget = MAX_PROBES - len(survey.probes)
        wanted = _closer_looks(survey, count, tolerance)[:budget]
        if not wanted:
            break
        survey.add(probe(wanted))
    return _quantiles(survey, count, chains)


def _estimates(survey: _Survey, count: int) -> list[tuple[_Gap, float]]:
    """Each gap and the points estimated in it: its length times the mean of the densities
    at its ends, scaled so that they add up to what no probe saw."""
    gaps = survey.gaps()
    unseen = max(0, count - len(survey.known))
    raw = [gap.raw_estimate for gap in gaps]
    total = sum(raw)
    if total > 0:
        return [(gap, unseen * r / total) for gap, r in zip(gaps, raw, strict=True)]
    length = sum(gap.stop - gap.start for gap in gaps)
    return [(gap, unseen * (gap.stop - gap.start) / length if length else 0.0) for gap in gaps]


def _closer_looks(survey: _Survey, count: int, tolerance: float) -> list[int]:
    """Where to probe next: in each gap whose ends disagree on the density by more than
    chance (a run of ids that ends or starts in it) and whose count may be off by more
    than ``tolerance``, most uncertain first."""
    unseen = max(0, count - len(survey.known))
    looks: list[tuple[float, list[int]]] = []
    for gap in survey.gaps():
        dense, sparse = max(gap.before, gap.after), min(gap.before, gap.after)
        if dense == 0 or dense <= 2 * sparse:
            continue
        # A run of density `dense` holds at most `unseen` points: it ends within that.
        span = min(gap.stop - gap.start, max(1, int(unseen / dense)))
        doubt = span * (dense - sparse) / 2
        if doubt <= tolerance:
            continue
        step = [span * i // PROBES_PER_GAP for i in range(1, PROBES_PER_GAP + 1)]
        if gap.before >= gap.after:  # the run goes on after the gap's start
            keys = [gap.start + s for s in step]
        else:  # the run starts somewhere before the gap's end: a probe finds its start
            keys = [gap.stop - s for s in step]
        keys = sorted({k for k in keys if gap.start <= k < gap.stop})
        looks.append((doubt, keys))
    looks.sort(key=lambda look: -look[0])
    return [k for _, keys in looks for k in keys]


def _quantiles(survey: _Survey, count: int, chains: int) -> list[int]:
    """The keys where the estimated number of points before them reaches each multiple of
    ``total / chains``: known points count one each, a gap its estimate, spread evenly."""
    estimates = _estimates(survey, count)
    total = len(survey.known) + sum(e for _, e in estimates)
    if total <= 0:
        return []
    targets = [total * i / chains for i in range(1, chains)]
    # Known points and gaps in key order (a gap starts where no known point is).
    items: list[tuple[int, int, float]] = [(k, k + 1, 1.0) for k in survey.known]
    items += [(gap.start, gap.stop, e) for gap, e in estimates if e > 0]
    items.sort()
    found: list[int] = []
    before = 0.0
    t = 0
    for start, stop, points in items:
        while t < len(targets) and targets[t] < before + points:
            share = (targets[t] - before) / points
            found.append(start + int(share * (stop - start)))
            t += 1
        before += points
    return sorted({key for key in found if 0 < key < KEYS_END})

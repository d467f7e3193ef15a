"""What the face-world studies train on: the datasets they need and the cells that use them.

A *cell* is one bar of a results table: a dataset (plus, for some, a metadata selection or
SynFace's domain mixup with real data), trained with the experiments' recognizer recipe once
per seed. Datasets are described by value (:class:`RealSet`, :class:`SyntheticSet`,
:class:`MeasuredSet`), so two cells that need the same data share one copy, and two cells
with the same data and settings share their runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from factory.config import ExperimentsConfig, VolumeConfig
from factory.experiments.targets import ResolvedTarget


def signed(value: float, decimals: int = 2) -> str:
    """A number for a folder name: ``p0.25``, ``n0.25`` (run names allow no '+')."""
    return f"{'n' if value < 0 else 'p'}{abs(value):.{decimals}f}"


@dataclass(frozen=True)
class RealSet:
    """The first ``identities`` identities of the experiments' face world, ``images`` each
    (the face world draws every identity and image from its own seeded stream, so a smaller
    world is exactly a subset of a larger one)."""

    identities: int
    images: int

    @property
    def key(self) -> str:
        return f"real-{self.identities}x{self.images}"

    @property
    def folder(self) -> str:
        return self.key

    def replicate(self, seed: int) -> RealSet:
        """Real data is the same in every replicate; only the training seed varies."""
        return self


@dataclass(frozen=True)
class SyntheticSet:
    """``identities`` identities x ``images`` images synthesised from held-out inquiries at the
    listed m values (cycled over each identity's images), by ``generator`` (empty: the
    experiments' generator), named ``generator_tag`` in the key, plus ``mixup`` SynFace
    identity-mixup identities made from those same identities, sampled with ``seed`` (each
    replicate of a cell synthesises its own copy)."""

    identities: int
    images: int
    m_values: tuple[float, ...]
    generator: str = ""
    mixup: int = 0
    generator_tag: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        if bool(self.generator) != bool(self.generator_tag):
            raise ValueError("a synthetic set by another generator needs a generator_tag")

    @property
    def key(self) -> str:
        values = "_".join(signed(m) for m in self.m_values)
        name = f"synthetic-{self.identities}x{self.images}-m{values}"
        if self.mixup:
            name += f"-mixup{self.mixup}"
        return name + (f"-{self.generator_tag}" if self.generator_tag else "")

    @property
    def folder(self) -> str:
        """Where this seed's copy lives: the key names what it is, the seed which copy."""
        return f"{self.key}-seed{self.seed}"

    def replicate(self, seed: int) -> SyntheticSet:
        return replace(self, seed=seed)


@dataclass(frozen=True)
class MeasuredSet:
    """A real set whose every sample records the judge's similarity to its identity center
    (the judge trained on none of its images, unlike E_id, which trained on the face world's
    training set)."""

    source: RealSet

    @property
    def key(self) -> str:
        return f"measured-judge-{self.source.key}"

    @property
    def folder(self) -> str:
        return self.key

    def replicate(self, seed: int) -> MeasuredSet:
        return self


Dataset = RealSet | SyntheticSet | MeasuredSet


@dataclass(frozen=True)
class Cell:
    """One bar: a study, its label, what it trains on, and where it sits on a curve."""

    study: str
    name: str
    data: Dataset
    m: tuple[float, float] | None = None
    """Requested-m selection (synthetic pools)."""
    similarity: tuple[float, float] | None = None
    """Similarity-to-center selection (measured pools); filled in once the pool exists."""
    group: int | None = None
    """Index of the similarity group (measured pools), 0 the least similar."""
    real: RealSet | None = None
    """SynFace domain mixup with this real set (psi over the 21-value grid)."""
    position: float | None = None
    """Where the cell sits on its study's curve (its requested m; a group's similarity)."""
    tags: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def data_for(self, seed: int) -> Dataset:
        """The data replicate ``seed`` trains on (its own synthesis; the same real data)."""
        return self.data.replicate(seed)

    @property
    def key(self) -> str:
        """Names the cell's runs: cells with equal keys train the same thing."""
        parts = [self.data.key]
        if self.m is not None:
            parts.append(f"sel-m{signed(self.m[0], 3)}_{signed(self.m[1], 3)}")
        if self.group is not None:
            parts.append(f"group{self.group}")
        if self.real is not None:
            parts.append(f"domainmix-{self.real.key}")
        return "-".join(parts)


def volume(v: VolumeConfig) -> tuple[int, int]:
    return v.identities, v.images_per_identity


M_TOLERANCE = 0.004
"""Half-width of the m selection picking one of a pool's m values (at least 0.01 apart)."""


def m_pool(cfg: ExperimentsConfig, targets: list[ResolvedTarget]) -> SyntheticSet:
    """The m study's pool: the first volume's identities, its images at every reachable
    target's m and at every listed m."""
    identities, images = volume(cfg.volumes[0])
    reachable = {t.m for t in targets if t.m is not None}
    values = tuple(sorted({*reachable, *cfg.m_values}, reverse=True))
    return SyntheticSet(identities, images * len(values), values)


def m_study(cfg: ExperimentsConfig, targets: list[ResolvedTarget]) -> list[Cell]:
    """CemiFace's m study at the first volume: one pool sampled at every reachable target's m
    and every listed m, each cell the pool's images at one m (equal volume), plus each mixture
    as its own set. Cells named by a measured target come first (tagged with it)."""
    identities, images = volume(cfg.volumes[0])
    pool = m_pool(cfg, targets)
    cells = [pool_cell("m", f"{t.label}: m = {t.m:+.2f}", pool, t.m,
                       tags={"axis": t.axis, "target": f"{t.similarity:g}", "named_by": "target"})
             for t in targets if t.m is not None]
    cells += [pool_cell("m", f"m = {m:+.2f}", pool, m, tags={"named_by": "m"})
              for m in cfg.m_values]
    for mixture in cfg.m_mixtures:
        label = "mix {" + ", ".join(f"{m:+.2f}" for m in mixture) + "}"
        cells.append(Cell("m", label, SyntheticSet(identities, images, tuple(mixture)),
                          tags={"named_by": "mixture"}))
    return cells


def pool_cell(study: str, name: str, pool: SyntheticSet, m: float,
              tags: dict[str, str] | None = None, real: RealSet | None = None) -> Cell:
    """The pool's images at one of its m values."""
    return Cell(study, name, pool, m=(m - M_TOLERANCE, m + M_TOLERANCE), real=real, position=m,
                tags=tags or {})


def group_study(cfg: ExperimentsConfig) -> list[Cell]:
    """CemiFace's similarity-group study: the largest real set measured with E_id and split
    into equal-count groups by similarity to center (bounds filled in from the pool)."""
    identities, images = volume(cfg.volumes[-1])
    pool = MeasuredSet(RealSet(identities, images))
    return [Cell("similarity_groups", f"group {g + 1} of {cfg.similarity_groups}", pool, group=g)
            for g in range(cfg.similarity_groups)]


def best_m_set(cfg: ExperimentsConfig, best_m: float, identities: int | None = None,
               generator: str = "", generator_tag: str = "", mixup: int = 0) -> SyntheticSet:
    """A set of its own at one m, by default at the first volume."""
    default_identities, images = volume(cfg.volumes[0])
    return SyntheticSet(identities or default_identities, images, (best_m,), generator, mixup,
                        generator_tag)


def at_m(study: str, name: str, cfg: ExperimentsConfig, targets: list[ResolvedTarget],
         m: float, identities: int | None = None, tags: dict[str, str] | None = None,
         real: RealSet | None = None) -> Cell:
    """A cell of the experiments' generator's images at one m: at the first volume, where the
    m study's pool holds that m, the m study's own cell (the same identities, images per
    identity and m, hence the same data and runs: a set of its own would differ only in its
    noise and would cost a synthesis and a training per replicate again); otherwise a set of
    its own."""
    pool = m_pool(cfg, targets)
    if identities in (None, pool.identities) and any(abs(v - m) <= M_TOLERANCE
                                                     for v in pool.m_values):
        return pool_cell(study, name, pool, m, tags=tags, real=real)
    return Cell(study, name, best_m_set(cfg, m, identities), real=real, tags=tags or {})


LAMBDA0_ROLES = ("experiments", "lambda0", "equal budget")
"""The lambda = 0 study's generators (a cell's ``generator`` tag): the experiments' own, the
lambda = 0 one, and the similarity-matched one trained with the lambda = 0 one's budget."""


def lambda0_study(cfg: ExperimentsConfig, targets: list[ResolvedTarget],
                  best_m: float) -> list[Cell]:
    """The paper's ablation at the first volume and ``best_m`` (the m study's best cell below
    m = +1, where the two objectives differ: at m = +1 both only keep the identity): the
    lambda = 0 generator's data against the experiments' generator's (the m study's cell) and,
    with ``lambda0_reference_checkpoint``, against the similarity-matched generator trained
    exactly as the lambda = 0 one (recipe, steps, data, E_id): the comparison that isolates
    lambda."""
    experiments, lambda0, equal = LAMBDA0_ROLES
    cells = [at_m("lambda0", "similarity-matched (lambda > 0)", cfg, targets, best_m,
                  tags={"generator": experiments}),
             Cell("lambda0", "lambda = 0", best_m_set(cfg, best_m,
                                                      generator=cfg.lambda0_checkpoint,
                                                      generator_tag="lambda0"),
                  tags={"generator": lambda0})]
    if cfg.lambda0_reference_checkpoint:
        cells.append(Cell("lambda0", "similarity-matched (lambda > 0), lambda = 0's training",
                          best_m_set(cfg, best_m, generator=cfg.lambda0_reference_checkpoint,
                                     generator_tag="matched-budget"),
                          tags={"generator": equal}))
    return cells


def synface_study(cfg: ExperimentsConfig, targets: list[ResolvedTarget],
                  best_m: float) -> list[Cell]:
    """SynFace's two mixups at the first volume and the best m. Identity mixup as SynFace ran
    it: the same N base identities, plain (the m study's cell) and with ``mixup_share`` x N
    mixed identities (made from them, soft labels) added, once at the same images per identity
    (more images) and once at equal images (fewer per identity, the total as the plain set's);
    and domain mixup of the plain cell with a small real share."""
    base, images = volume(cfg.volumes[0])
    mixed = max(1, round(base * cfg.mixup_share))
    equal = max(2, round(images * base / (base + mixed)))
    real = RealSet(*volume(cfg.real_share))
    return [
        at_m("synface", f"plain: {base} identities x {images}", cfg, targets, best_m),
        Cell("synface", f"identity mixup added: {base} + {mixed} mixed identities x {images}",
             best_m_set(cfg, best_m, mixup=mixed), tags={"mixup": "added"}),
        Cell("synface", f"identity mixup at equal images: {base} + {mixed} mixed identities "
                        f"x {equal} ({(base + mixed) * equal} images)",
             replace(best_m_set(cfg, best_m), images=equal, mixup=mixed),
             tags={"mixup": "equal images"}),
        at_m("synface", f"domain mixup with {real.identities}x{real.images} real", cfg, targets,
             best_m, tags={"mixup": "domain"}, real=real),
    ]


def gtr_study(cfg: ExperimentsConfig, targets: list[ResolvedTarget], best_m: float,
              top_m: float, synthetic_identities: dict[int, int]) -> list[Cell]:
    """GtR at each volume: the real subset against the synthetic set of the best m with as many
    identities as synthesis could give (``synthetic_identities``: asked -> got) and images (at
    the first volume, the m study's cell); where the best m is not the most similar one
    (``top_m``), also the set at ``top_m``, which splits the gap into what the most similar
    data loses against real data and what the chosen difficulty gains over it."""
    cells = []
    for v in cfg.volumes:
        identities, images = volume(v)
        got = synthetic_identities.get(identities, identities)
        tags = {"volume": f"{got}x{images}"}
        cells.append(Cell("gtr", f"real {got}x{images}", RealSet(got, images),
                          tags={**tags, "side": "real"}))
        cells.append(at_m("gtr", f"synthetic {got}x{images} (m = {best_m:+.2f}, chosen)", cfg,
                          targets, best_m, identities, tags={**tags, "side": "synthetic"}))
        if abs(top_m - best_m) > M_TOLERANCE:
            cells.append(at_m("gtr", f"synthetic {got}x{images} (m = {top_m:+.2f}, most "
                                     "similar)", cfg, targets, top_m, identities,
                              tags={**tags, "side": "most similar"}))
    return cells

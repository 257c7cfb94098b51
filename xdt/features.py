"""``xdt features``: maps of a saved run's feature space, its source test texts against its target test texts.

For every run given, the selected checkpoint's model (:func:`xdt.inference.load_run`, under the rules that keep a
run folder data) embeds a sample of each domain's test split into the pooled features that the alignment
strategies compare (:meth:`xdt.inference.LoadedRun.features`: what DANN's discriminator reads and CORAL's
covariances are taken of); the features of all domains are projected to 2-D together (t-SNE, or PCA as the fast
option) and drawn one colour per domain, one marker per class. The title carries the run's proxy A-distance
between source and target features (:func:`proxy_a_distance`) and the target test accuracy its ``metrics.json``
records. Several runs also make one figure with a panel per run, side by side (ERM, DANN, CORAL on one pair).

Sampling: each domain's test split (cut at the run's ``max_examples``, as the run scored it) gives at most
``max_points`` texts, drawn without replacement by a generator seeded with ``seed`` and the domain's name, so
every run of a comparison maps the same texts and the same seed gives the same coordinates.

Nothing is written into a run folder: the figures and ``features.json`` go to this command's own folder
(``outputs/<date>/<time>/``) or to ``out``.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from xdt import saved_run
from xdt.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from xdt.errors import XdtError
from xdt.run_files import FAILED

log = logging.getLogger(__name__)

METHODS = ("tsne", "pca")
METHOD_NAMES = {"tsne": "t-SNE", "pca": "PCA"}
SUMMARY = "features.json"
SIDE_BY_SIDE = "features_side_by_side.png"
INSTALL = 'pip install -e ".[features]"'
MIN_POINTS = 10  # per domain: the A-distance needs a few points on each side of its split
# Colours by role, so a source reads as blue and a target as orange in every figure (the pair tab10 keeps apart in
# grey print and for the common colour-vision deficiencies); further domains of a role take the next colour.
SOURCE_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#17becf")
TARGET_COLOURS = ("#ff7f0e", "#d62728", "#8c564b", "#e377c2", "#bcbd22")
CLASS_MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*", "<", ">")


# ---- settings ---------------------------------------------------------------------------------------------

def run_dirs(value) -> list[Path]:
    """The run folders ``run_dir`` names: one folder, a list (``run_dir=[runs/erm,runs/dann]``; the command line
    hands a list over as its text, which is read back with Hydra's own grammar here), or a sweep folder, which
    stands for its job folders (``runs/grid`` for ``runs/grid/0_strategy=erm``, ``runs/grid/1_strategy=dann``,
    ...)."""
    if value is None or value == "" or (isinstance(value, (list, ListConfig)) and not len(value)):
        raise XdtError("xdt features needs run_dir=<folder of a training run> (or run_dir=[<run>,<run>,...] to "
                       "compare runs side by side)")
    if isinstance(value, (list, ListConfig)):
        values = [str(v) for v in value]
    else:
        text = str(value).strip()
        values = [text]
        if text.startswith("[") and text.endswith("]") and not Path(text).expanduser().is_dir():
            from hydra.core.override_parser.overrides_parser import OverridesParser
            from hydra.errors import HydraException

            try:
                parsed = OverridesParser.create().parse_override(f"run_dir={text}").value()
            except HydraException as error:
                raise XdtError(f"run_dir={text} is not a list of folders Hydra can read ({error}); quote folder "
                               f"names that hold = or , like this: run_dir=\"['runs/0_seed=0,strategy=erm',"
                               f"'runs/1_seed=0,strategy=dann']\"") from None
            values = [str(v) for v in (parsed if isinstance(parsed, list) else [parsed])]
    folders = []
    for folder in (Path(v).expanduser() for v in values):
        if not folder.is_dir():
            raise XdtError(f"run_dir={folder}: no such folder")
        folders += _runs_below(folder) or [folder]
    return folders


def _runs_below(folder: Path) -> list[Path]:
    """The runs of a sweep folder (its job folders that hold a config.yaml, by job number), if ``folder`` is not
    a run itself; [] otherwise."""
    if (folder / "config.yaml").exists():
        return []
    jobs = [child for child in folder.iterdir() if child.is_dir() and (child / "config.yaml").is_file()]

    def order(job: Path) -> tuple:
        number = job.name.split("_", 1)[0]
        return (int(number), job.name) if number.isdigit() else (float("inf"), job.name)

    return sorted(jobs, key=order)


def _tsne_class():
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise XdtError(f"method=tsne needs scikit-learn, which is not installed: {INSTALL} (or method=pca, which "
                       f"needs nothing more)") from None
    return TSNE


@dataclass(frozen=True)
class Settings:
    method: str
    max_points: int
    seed: int
    perplexity: float


def _whole(cfg: DictConfig, key: str, low: int, what: str) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise XdtError(f"{key}={value!r} is not valid: {what}")
    return value


def check_settings(cfg: DictConfig) -> Settings:
    """The command's settings, each refused with a message naming its key."""
    method = str(cfg.get("method"))
    if method not in METHODS:
        raise XdtError(f"method={method!r} is not a projection xdt features draws: choose tsne (t-SNE, scikit-learn)"
                       f" or pca (fast, nothing to install)")
    max_points = _whole(cfg, "max_points", 1, "the most test texts drawn per domain, a whole number >= 1 "
                                              f"(500 is the default; at least {MIN_POINTS} per domain are needed)")
    seed = _whole(cfg, "seed", 0, "a whole number >= 0 (it seeds the sample, t-SNE and the A-distance's split)")
    perplexity = cfg.get("perplexity")
    if isinstance(perplexity, bool) or not isinstance(perplexity, (int, float)) or perplexity <= 0:
        raise XdtError(f"perplexity={perplexity!r} is not valid: t-SNE's perplexity, a number > 0 (30 is usual)")
    if method == "tsne":
        _tsne_class()  # before any model is loaded
    return Settings(method, max_points, seed, float(perplexity))


# ---- the numbers: sample, features, projection, A-distance ---------------------------------------------------

def sample_rows(size: int, max_points: int, seed: int, name: str) -> np.ndarray:
    """Indices of at most ``max_points`` of ``size`` rows, drawn without replacement by a generator seeded with
    ``seed`` and the domain's ``name`` (the same texts for every run that maps this domain), in row order."""
    if size <= max_points:
        return np.arange(size)
    generator = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    return np.sort(generator.choice(size, size=max_points, replace=False))


def proxy_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 0, l2: float = 1e-2) -> float:
    """Proxy A-distance between two sets of feature vectors (Ben-David et al., "Analysis of representations for
    domain adaptation", NeurIPS 2007, and "A theory of learning from different domains", Machine Learning 2010):
    ``2 (1 - 2 e)``, with ``e`` the held-out error of a linear classifier trained to tell the two sets apart.

    Exactly how, given ``seed`` and ``l2``:

    1. balance: ``n = min(len(source), len(target))`` vectors of each set (a random subset of the larger one);
    2. split: each set's ``n`` vectors, shuffled, are cut in halves; the first halves of both sets train the
       classifier and the second halves test it (both halves balanced, ``n // 2`` train vectors a side);
    3. every feature is standardised with the mean and standard deviation of the training half;
    4. classifier: logistic regression (a weight per feature and a bias), minimising the mean binary
       cross-entropy plus ``l2 * ||w||^2`` (the bias is not penalised), fitted full-batch from zero weights by
       L-BFGS (strong-Wolfe line search, at most 500 iterations) in float64;
    5. ``e`` = the share of the test half it labels with the wrong domain (threshold at probability 1/2).

    One numpy generator seeded with ``seed`` draws the subset and both shuffles, so the result is repeatable.
    It lies in [-2, 2]: 2 when a line separates the domains, about 0 when they cannot be told apart (values a
    little below 0 are that too: the test error of a chance classifier scatters around 1/2).
    """
    import torch

    n = min(len(source), len(target))
    if n < MIN_POINTS:
        raise XdtError(f"the proxy A-distance needs at least {MIN_POINTS} points per domain (got {n})")
    generator = np.random.default_rng(seed)
    halves = []
    for vectors in (np.asarray(source, np.float64), np.asarray(target, np.float64)):
        rows = generator.permutation(len(vectors))[:n]
        halves.append((vectors[rows[: n // 2]], vectors[rows[n // 2:]]))
    train = np.concatenate([halves[0][0], halves[1][0]])
    test = np.concatenate([halves[0][1], halves[1][1]])
    train_y = np.concatenate([np.zeros(len(halves[0][0])), np.ones(len(halves[1][0]))])
    test_y = np.concatenate([np.zeros(len(halves[0][1])), np.ones(len(halves[1][1]))])
    mean, scale = train.mean(0), train.std(0)
    scale[scale < 1e-12] = 1.0  # a constant feature stays 0
    x, y = torch.from_numpy((train - mean) / scale), torch.from_numpy(train_y)
    weights = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ weights + bias, y) + \
            l2 * weights.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        scores = torch.from_numpy((test - mean) / scale) @ weights + bias
        error = float(((scores > 0).double() != torch.from_numpy(test_y)).double().mean())
    return 2.0 * (1.0 - 2.0 * error)


def project(features: np.ndarray, method: str, seed: int, perplexity: float = 30.0) -> tuple[np.ndarray, dict]:
    """2-D coordinates of ``features`` (rows), and what the projection was (its settings; PCA: the share of the
    variance each axis holds).

    * ``pca``: exact PCA (the centred features' singular value decomposition, float64), each axis's sign fixed
      so its largest loading is positive: no randomness, so no seed;
    * ``tsne``: scikit-learn's t-SNE (Barnes-Hut, PCA initialisation, learning rate ``auto``, 1000 iterations)
      with ``random_state=seed``, on one thread; ``perplexity`` is lowered to ``(points - 1) / 3`` for small
      samples.
    """
    x = np.asarray(features, np.float64)
    if method == "pca":
        import torch  # its LAPACK on its threads: numpy's BLAS threads fought torch's idle ones (seconds, not ms)

        centred = x - x.mean(0)
        _, singular, axes = (t.numpy() for t in torch.linalg.svd(torch.from_numpy(centred), full_matrices=False))
        axes = axes[:2]
        signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(1)])
        axes = axes * signs[:, None]
        coordinates = centred @ axes.T
        if coordinates.shape[1] < 2:  # one feature: a second axis of zeros
            coordinates = np.column_stack([coordinates, np.zeros(len(x))])
        variance = singular ** 2
        share = (variance[:2] / variance.sum()).tolist() if variance.sum() > 0 else [0.0, 0.0]
        return coordinates.astype(np.float32), {"variance_share": [round(v, 4) for v in share]}
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    used = float(min(perplexity, max(1.0, (len(x) - 1) / 3)))
    tsne = _tsne_class()(n_components=2, perplexity=used, init="pca", learning_rate="auto", random_state=seed)
    # One thread: Barnes-Hut's OpenMP threads spin while they wait, so on a busy machine (two cores shared with a
    # training run) two threads took 10 times as long as one; a thousand points take seconds on one.
    with threadpool_limits(limits=1):
        return tsne.fit_transform(x).astype(np.float32), {"perplexity": used}


# ---- one run ------------------------------------------------------------------------------------------------

@dataclass
class Domain:
    """The sampled test texts of one domain, as a run embeds them."""

    name: str
    role: str  # source | target
    rows: np.ndarray  # the sampled rows of the domain's test split
    labels: np.ndarray  # class index (the run's label order) of each sampled row
    features: np.ndarray = field(repr=False, default=None)


@dataclass
class RunMap:
    """One run's feature map: its sampled domains, their 2-D coordinates and the run's numbers."""

    run_dir: Path
    strategy: str
    checkpoint: str  # step-NNNNNNN
    selected_step: int | None  # the step metrics.json scores (None: no metrics.json)
    label_names: list[str]
    domains: list[Domain]
    coordinates: np.ndarray  # one row per sampled text, the domains in order
    projection: dict
    a_distance: dict[str, float]  # target -> proxy A-distance between the sources' features and its features
    target_accuracy: dict[str, float | None]  # target -> test accuracy in metrics.json (None: not recorded)
    seconds: dict[str, float]
    name: str = ""  # the panel's and file's name (strategy, plus the folder where strategies repeat)

    @property
    def sources(self) -> list[str]:
        return [d.name for d in self.domains if d.role == "source"]

    @property
    def targets(self) -> list[str]:
        return [d.name for d in self.domains if d.role == "target"]

    @property
    def pair(self) -> str:
        return f"{'+'.join(self.sources)} → {', '.join(self.targets)}"

    def domain_of_point(self) -> np.ndarray:
        return np.concatenate([[i] * len(d.rows) for i, d in enumerate(self.domains)]).astype(int)


@dataclass
class Plan:
    """What one run's map needs, checked before any model is loaded."""

    run_dir: Path
    run_cfg: DictConfig
    targets: DictConfig
    metrics: dict | None
    name: str = ""  # the panel's and file's name (see name_plans)

    @property
    def strategy(self) -> str:
        return (self.metrics or {}).get("strategy") or \
            str(OmegaConf.select(self.run_cfg, "strategy._target_", default="?")).rsplit(".", 1)[-1].lower()


def _metrics(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    saved_run.inside(run_dir, path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise XdtError(f"{path} is damaged ({error}); it holds the run's final scores") from None


def plan_run(run_dir: Path, cfg: DictConfig) -> Plan:
    """Refuse what cannot be mapped (see the module docstring), cheaply: no model, no data."""
    from xdt.data.shots import domain_entries
    from xdt.inference import checkpoint_folder

    run_cfg = saved_run.load_config(run_dir, "run_dir", trust_remote_code=bool(cfg.get("trust_remote_code")))
    task = str(OmegaConf.select(run_cfg, "task._target_", default="")).rsplit(".", 1)[-1]
    if task == "TokenClassification":
        raise XdtError(f"run_dir={run_dir}: a token-classification run; xdt features maps sequence-classification "
                       f"runs, whose test texts each have one class to mark. A NER run aligns sentence features "
                       f"(the mean of the token states), which have no class, and a map of its entity words' token "
                       f"features is not built")
    if task != "SequenceClassification":
        raise XdtError(f"run_dir={run_dir}: a {task or 'other'} run; xdt features maps sequence-classification runs "
                       f"(a language model is fine-tuned from with model.init_from={run_dir})")
    checkpoint_folder(run_dir, str(cfg.get("checkpoint") or "best"))  # no checkpoints: refused here
    given = cfg.get("target_domain")
    targets = given if given else run_cfg.get("target_domain")
    if not domain_entries(targets, "target_domain"):
        raise XdtError(f"run_dir={run_dir}: the run has no target domains (it was trained with target_domain=[]); "
                       f"name the domain to map against its source with target_domain=<name>")
    return Plan(run_dir, run_cfg, targets, _metrics(run_dir))


def _domains(plan: Plan, run, settings: Settings) -> list[Domain]:
    """Each source and target domain's sampled test rows (texts embedded by ``run``)."""
    import datasets

    from xdt.data.domains import load_group

    datasets.disable_progress_bars()  # xdt logs what it loads
    limit = plan.run_cfg.get("max_examples")
    index = {name: i for i, name in enumerate(run.labels)}
    domains = []
    for role, group in (("source", plan.run_cfg.source_domain), ("target", plan.targets)):
        for raw in load_group(group, f"{role}_domain", limit):
            test = raw.test
            unknown = sorted(set(map(str, test.unique("label"))) - set(index))
            if unknown:
                raise XdtError(f"{role}_domain {raw.name}: its test split has labels {unknown} that the run "
                               f"({plan.run_dir}) was not trained on (its labels: {', '.join(run.labels)})")
            if len(test) < MIN_POINTS:
                raise XdtError(f"{role}_domain {raw.name}: its test split has {len(test)} rows; a map needs at "
                               f"least {MIN_POINTS} per domain")
            rows = sample_rows(len(test), settings.max_points, settings.seed, raw.name)
            picked = test.select(rows.tolist())
            domain = Domain(raw.name, role, rows, np.array([index[str(y)] for y in picked["label"]], dtype=int))
            domain.features = run.features(picked["text"])
            domains.append(domain)
    return domains


def map_run(plan: Plan, settings: Settings, cfg: DictConfig) -> RunMap:
    """Embed, project and measure one planned run."""
    from xdt.inference import load_run

    started = time.perf_counter()
    run = load_run(plan.run_dir, checkpoint=str(cfg.get("checkpoint") or "best"), device=cfg.get("device", "auto"),
                   batch_size=int(cfg.get("batch_size") or 64), trust_remote_code=bool(cfg.get("trust_remote_code")))
    domains = _domains(plan, run, settings)
    embedded = time.perf_counter()
    coordinates, projection = project(np.concatenate([d.features for d in domains]), settings.method,
                                      settings.seed, settings.perplexity)
    projected = time.perf_counter()
    sources = np.concatenate([d.features for d in domains if d.role == "source"])
    a_distance = {d.name: round(proxy_a_distance(sources, d.features, settings.seed), 4)
                  for d in domains if d.role == "target"}
    measured = time.perf_counter()
    metrics = (plan.metrics or {}).get("metrics", {})
    accuracy = {d.name: metrics.get(f"target/{d.name}/test", {}).get("accuracy") for d in domains
                if d.role == "target"}
    return RunMap(plan.run_dir, plan.strategy, run.checkpoint, (plan.metrics or {}).get("selected_step"),
                  list(run.labels), domains, coordinates, projection, a_distance, accuracy,
                  {"load_and_embed": round(embedded - started, 3), "project": round(projected - embedded, 3),
                   "a_distance": round(measured - projected, 3)}, name=plan.name or plan.strategy)


def name_plans(plans: list[Plan]) -> list[str]:
    """Each run's name (its strategy, plus its folder where two runs share a strategy: seeds, settings) and the
    file name of its figure, distinct from the others'."""
    from xdt.plots import slug

    strategies = [p.strategy for p in plans]
    for p in plans:
        p.name = p.strategy if strategies.count(p.strategy) == 1 else f"{p.strategy} ({p.run_dir.name})"
    names = [f"features_{slug(p.name.replace(' (', '_').rstrip(')'))}.png" for p in plans]
    return [n if names.count(n) == 1 else n.replace(".png", f"_{i + 1}.png") for i, n in enumerate(names)]


# ---- figures ------------------------------------------------------------------------------------------------

def domain_colours(maps: list[RunMap]) -> dict[str, str]:
    """One colour per domain across every map: sources blue, green, ...; targets orange, red, ..."""
    colours: dict[str, str] = {}
    for role, palette in (("source", SOURCE_COLOURS), ("target", TARGET_COLOURS)):
        names = [d.name for m in maps for d in m.domains if d.role == role]
        for name in dict.fromkeys(names):
            if name not in colours:
                colours[name] = palette[sum(c in palette for c in colours.values()) % len(palette)]
    return colours


def _fmt(value: float | None) -> str:
    return "not recorded" if value is None else f"{value:.3f}"


def numbers_line(m: RunMap, short: bool = False) -> str:
    """'proxy A-distance 1.62 · target test accuracy 0.712' (per target where there are several)."""
    a_label, acc_label = ("A-dist.", "target acc.") if short else ("proxy A-distance", "target test accuracy")
    if len(m.a_distance) == 1:
        (target, a), = m.a_distance.items()
        return f"{a_label} {a:.2f} · {acc_label} {_fmt(m.target_accuracy[target])}"
    return "\n".join(f"{target}: {a_label} {a:.2f} · {acc_label} {_fmt(m.target_accuracy[target])}"
                     for target, a in m.a_distance.items())  # a line per target


def _axis_labels(axis, m: RunMap, method: str) -> None:
    if method == "pca":
        share = m.projection.get("variance_share", [0, 0])
        axis.set_xlabel(f"PC 1 ({share[0]:.0%} of the variance)")
        axis.set_ylabel(f"PC 2 ({share[1]:.0%} of the variance)")
    else:  # t-SNE's axes have no units: only neighbourhoods mean something
        axis.set_xlabel("t-SNE 1")
        axis.set_ylabel("t-SNE 2")
        axis.set_xticks([])
        axis.set_yticks([])


def _scatter(axis, m: RunMap, colours: dict[str, str], seed: int) -> None:
    """Every point, colour by domain and marker by class, drawn in a seeded random order in a few slices, so
    neither domain is painted over the other wholesale."""
    domain = m.domain_of_point()
    labels = np.concatenate([d.labels for d in m.domains])
    point_colours = np.array([colours[m.domains[i].name] for i in domain])
    order = np.random.default_rng(seed).permutation(len(domain))
    for part in np.array_split(order, min(8, len(order))):
        for label in np.unique(labels[part]):
            chosen = part[labels[part] == label]
            axis.scatter(m.coordinates[chosen, 0], m.coordinates[chosen, 1], c=point_colours[chosen],
                         marker=CLASS_MARKERS[label % len(CLASS_MARKERS)], s=22, alpha=0.6, linewidths=0)
    axis.grid(alpha=0.2)


def _legend(figure, maps: list[RunMap], colours: dict[str, str]):
    """Two legends right of the panels: the domains (colour) and the classes (marker)."""
    from matplotlib.lines import Line2D

    from xdt.plots import plain

    counts: dict[str, set] = {}
    roles: dict[str, str] = {}
    for m in maps:
        for d in m.domains:
            counts.setdefault(d.name, set()).add(len(d.rows))
            roles[d.name] = d.role
    domain_handles = [Line2D([], [], linestyle="", marker="o", markersize=9, color=colours[name],
                             label=plain(f"{roles[name]}: {name} ({'/'.join(map(str, sorted(n)))} texts)"))
                      for name, n in counts.items()]
    labels = list(dict.fromkeys(label for m in maps for label in m.label_names))
    class_handles = [Line2D([], [], linestyle="", marker=CLASS_MARKERS[i % len(CLASS_MARKERS)], markersize=9,
                            color="0.25", label=plain(str(label))) for i, label in enumerate(labels)]
    first = figure.legend(handles=domain_handles, title="domain (colour)", loc="upper left",
                          bbox_to_anchor=(1.0, 0.92), frameon=False, alignment="left")
    bottom = figure.transFigure.inverted().transform(first.get_window_extent(figure.canvas.get_renderer()))[0][1]
    figure.legend(handles=class_handles, title="class (marker)", loc="upper left", bbox_to_anchor=(1.0, bottom - 0.03),
                  frameon=False, alignment="left")


def _what(maps: list[RunMap], settings: Settings) -> str:
    method = METHOD_NAMES[settings.method]
    return (f"{method} of the pooled features of each domain's test texts (at most {settings.max_points} per "
            f"domain, seed {settings.seed})")


def plot_run(m: RunMap, settings: Settings, path: Path, colours: dict[str, str]) -> Path:
    """One run's map (see the module docstring)."""
    from xdt.plots import STYLE, _pyplot, plain, wrap

    plt = _pyplot()
    with plt.rc_context(STYLE):
        figure, axis = plt.subplots(figsize=(7.0, 6.0))
        _scatter(axis, m, colours, settings.seed)
        _axis_labels(axis, m, settings.method)
        step = f"checkpoint {m.checkpoint}" + ("" if m.selected_step is None else
                                               f", selected step {m.selected_step}")
        axis.set_title(wrap(plain(f"{m.name}: {m.pair}"), 70) + "\n" + plain(numbers_line(m)), fontsize=11)
        figure.text(0.5, -0.01, wrap(plain(f"{_what([m], settings)}; {step}; {m.run_dir}"), 110),
                    ha="center", va="top", fontsize=8, color="0.35")
        figure.tight_layout()
        _legend(figure, [m], colours)
        atomic_write_bytes(path, lambda tmp: figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
        plt.close(figure)
    return path


def plot_side_by_side(maps: list[RunMap], settings: Settings, path: Path, colours: dict[str, str]) -> Path:
    """Every run's map as a panel, side by side (at most 4 a row), one legend for all."""
    from xdt.plots import STYLE, _pyplot, plain, wrap

    plt = _pyplot()
    columns = min(len(maps), 4)
    rows = -(-len(maps) // columns)
    one_pair = len({m.pair for m in maps}) == 1
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.8 * rows), squeeze=False)
        for axis, m in zip(axes.flat, maps):
            _scatter(axis, m, colours, settings.seed)
            _axis_labels(axis, m, settings.method)
            title = m.name if one_pair else f"{m.name}: {m.pair}"
            axis.set_title(wrap(plain(title), 45) + "\n" + plain(numbers_line(m, short=True)), fontsize=10.5)
        for axis in list(axes.flat)[len(maps):]:
            axis.set_visible(False)
        heading = f"Feature maps, {maps[0].pair}" if one_pair else "Feature maps"
        figure.suptitle(wrap(plain(heading), 100) + "\n" + wrap(plain(_what(maps, settings)), 120), fontsize=12)
        figure.tight_layout()
        _legend(figure, maps, colours)
        atomic_write_bytes(path, lambda tmp: figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
        plt.close(figure)
    return path


# ---- the command --------------------------------------------------------------------------------------------

def output_folder(cfg: DictConfig, out_dir: Path | None, runs: list[Path]) -> Path:
    """Where the figures go: ``out`` or this command's own folder; never into (or above) a run folder."""
    folder = Path(str(cfg.out)).expanduser() if cfg.get("out") else out_dir
    if folder is None:
        raise XdtError("xdt features needs out=<folder> to write its figures into")
    resolved = Path(folder).resolve()
    for run in runs:
        root = run.resolve()
        if resolved == root or root in resolved.parents:
            raise XdtError(f"out={folder} is inside the run folder {run}; a run folder is data that xdt never "
                           f"writes into: choose another folder")
    if Path(folder).exists() and not Path(folder).is_dir():
        raise XdtError(f"out={folder} is a file; name a folder")
    return Path(folder)


def _check_free(folder: Path, names: list[str], overwrite: bool) -> None:
    taken = [name for name in names if (folder / name).exists()]
    if taken and not overwrite:
        raise XdtError(f"out={folder} already holds {', '.join(taken)}; pass overwrite=true to replace them, or "
                       f"choose another folder")


def feature_maps(cfg: DictConfig, out_dir: Path | None) -> dict:
    """``xdt features`` (see the module docstring): returns the summary it writes to ``features.json``."""
    runs = run_dirs(cfg.get("run_dir"))
    settings = check_settings(cfg)
    folder = output_folder(cfg, out_dir, runs)
    plans = [plan_run(run, cfg) for run in runs]  # every run checked before the first model is loaded
    names = name_plans(plans)
    _check_free(folder, [*names, *([SIDE_BY_SIDE] if len(plans) > 1 else []), SUMMARY], bool(cfg.get("overwrite")))
    started = time.perf_counter()
    maps = []
    for plan in plans:
        maps.append(map_run(plan, settings, cfg))
        m = maps[-1]
        log.info("%s: %s, %s in %.1f s", plan.run_dir, m.pair, numbers_line(m).replace("\n", "; "),
                 sum(m.seconds.values()))
    folder.mkdir(parents=True, exist_ok=True)
    colours = domain_colours(maps)
    for m, name in zip(maps, names):
        plot_run(m, settings, folder / name, colours)
    side = plot_side_by_side(maps, settings, folder / SIDE_BY_SIDE, colours).name if len(maps) > 1 else None
    summary = {"method": settings.method, "seed": settings.seed, "max_points": settings.max_points,
               "checkpoint": str(cfg.get("checkpoint") or "best"),
               "a_distance": "proxy A-distance 2(1-2e): e = held-out error of an L2-regularised logistic regression "
                             "(l2=0.01, standardised features) trained on half of each domain's sampled points "
                             "(balanced) and tested on the other half; see xdt.features.proxy_a_distance",
               "runs": [{"run_dir": str(m.run_dir), "name": m.name, "strategy": m.strategy,
                         "checkpoint": m.checkpoint, "selected_step": m.selected_step, "sources": m.sources,
                         "targets": m.targets, "points": {d.name: len(d.rows) for d in m.domains},
                         "proxy_a_distance": m.a_distance, "target_accuracy": m.target_accuracy,
                         "projection": m.projection, "figure": name, "seconds": m.seconds}
                        for m, name in zip(maps, names)],
               "side_by_side": side, "seconds": round(time.perf_counter() - started, 3)}
    atomic_write_json(folder / SUMMARY, summary)
    log.info("feature maps of %d run%s (%s) in %.1f s: %s", len(maps), "s" * (len(maps) > 1),
             METHOD_NAMES[settings.method], summary["seconds"], folder)
    return summary


def features_command(cfg: DictConfig, out_dir: Path) -> dict:
    """``xdt features``; an error is recorded as ``failed`` in the command's own folder when it exists."""
    try:
        return feature_maps(cfg, out_dir)
    except Exception as error:
        if out_dir is not None and Path(out_dir).is_dir():
            message = str(error) if isinstance(error, XdtError) else f"{type(error).__name__}: {error}"
            atomic_write_text(Path(out_dir) / FAILED, message + "\n")
        raise

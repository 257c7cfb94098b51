"""The logger group (issue 22): each tracker's files, read back with the tracker's own reader, hold what
metrics.jsonl and metrics.json hold, under the same names and at the same steps; a sweep's jobs are grouped; a
resumed run continues the one tracker run; bad input ends in one message before config.yaml is written."""

from __future__ import annotations

import http.server
import json
import logging
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import DATA_DIR, compose_config, run_xdt
from xdt import engine, tracking
from xdt.errors import XdtError
from xdt.hardware import make_accelerator
from xdt.train import train

tensorboard = pytest.importorskip("tensorboard")  # the test extra installs all three trackers
mlflow = pytest.importorskip("mlflow")
wandb = pytest.importorskip("wandb")

# Training terms every 2 steps, evaluations at 3 and 6: the trackers see train/* at 2, 3, 4 and 6.
SHORT = ("max_steps=6", "eval_interval=3", "log_interval=2")
TRAIN_STEPS = [2, 3, 4, 6]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Whatever the machine's environment, these runs record locally and upload nothing."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_TAGS", "WANDB_API_KEY",
                 "WANDB_BASE_URL", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def sweep_job(tmp_path: Path, name: str = "0_seed=0") -> Path:
    """A job folder of a sweep as Hydra lays it out (the sweep folder holds multirun.yaml)."""
    sweep = tmp_path / "shift"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep / name


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def expected(run: Path) -> dict[str, dict[int, float]]:
    """{name: {step: value}} of what a tracker must hold: metrics.jsonl's scores under their JSON path, its
    training terms at the evaluation steps, and metrics.json's numbers under final/."""
    wanted: dict[str, dict[int, float]] = {}
    for record in records(run):
        values = {**tracking.numbers(record["eval"], "eval"), **tracking.numbers(record["train"], "train"),
                  "selection/value": record["selection"]["value"], "elapsed_s": record["elapsed_s"]}
        for name, value in values.items():
            wanted.setdefault(name, {})[record["step"]] = value
    result = json.loads((run / "metrics.json").read_text())
    for name in ("selected_step", "steps", "source_validation_best"):
        wanted[f"final/{name}"] = {result["steps"]: result[name]}
    for name, value in tracking.numbers(result["metrics"], "final/metrics").items():
        wanted[name] = {result["steps"]: value}
    return wanted


def assert_holds(logged: dict[str, dict[int, float]], run: Path) -> None:
    """``logged`` ({name: {step: value}}) holds every value of ``expected`` at its step, and training terms
    every log_interval."""
    for name, steps in expected(run).items():
        assert name in logged, f"{name} was not logged (logged: {sorted(logged)[:8]} ...)"
        for step, value in steps.items():
            assert logged[name].get(step) == pytest.approx(value, rel=1e-6), (name, step)
    assert sorted(logged["train/loss"]) == TRAIN_STEPS
    assert sorted(logged["train/lr"]) == TRAIN_STEPS
    evaluated = sorted(r["step"] for r in records(run))
    assert sorted(logged["eval/target/syn_dvd/test/accuracy"]) == evaluated == [3, 6]


# ---- the trackers' own readers ------------------------------------------------------------------------

def tensorboard_scalars(folder: Path) -> tuple[dict[str, dict[int, float]], object]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = {}
    for tag in events.Tags()["scalars"]:
        points = events.Scalars(tag)
        assert len({p.step for p in points}) == len(points), f"{tag}: a step logged twice: {[p.step for p in points]}"
        scalars[tag] = {p.step: p.value for p in points}
    return scalars, events


def mlflow_metrics(client, run_id: str) -> dict[str, dict[int, float]]:
    run = client.get_run(run_id)
    logged = {}
    for name in run.data.metrics:
        history = client.get_metric_history(run_id, name)
        steps: dict[int, float] = {}
        for point in history:  # a resumed run sends the steps after its checkpoint again, with the same values
            assert steps.get(point.step, point.value) == pytest.approx(point.value, rel=1e-6), (name, point.step)
            steps[point.step] = point.value
        logged[name] = steps
    return logged


def wandb_records(path: Path):
    """The records of a W&B run file (``run-<id>.wandb``): LevelDB's log format, 32 KiB blocks of chunks, each
    with a 7-byte header (checksum, length, type), after a 7-byte file header; each record is a protobuf
    ``Record`` of wandb. wandb ships no reader for them in Python, so this is the format, read directly."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B run file"
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # the rest of a block too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:
            position += left
            continue
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # full, first | middle, last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def wandb_run(folder: Path) -> tuple[dict, dict[str, dict[int, float]], dict]:
    """(the run record's fields, history {name: {step: value}}, config) of an offline run folder."""
    found = sorted(folder.glob("run-*.wandb"))
    assert len(found) == 1, found
    info, history, config = {}, {}, {}
    for record in wandb_records(found[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info = {"id": record.run.run_id, "name": record.run.display_name, "group": record.run.run_group,
                    "project": record.run.project}
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for name, value in row.items():
                if not name.startswith("_"):
                    history.setdefault(name, {})[row["_step"]] = value
    return info, history, config


# ---- each tracker ---------------------------------------------------------------------------------------

def test_tensorboard_holds_metrics_jsonl_in_the_run_folder(smoke, tmp_path):
    job = sweep_job(tmp_path)
    cfg = smoke("logger=tensorboard", *SHORT)
    train(cfg, job)
    scalars, events = tensorboard_scalars(job / "tensorboard")
    assert_holds(scalars, job)
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["optimizer.lr"].number_value == pytest.approx(float(cfg.optimizer.lr))
    assert hparams["strategy._target_"].string_value == cfg.strategy._target_
    assert not (job / "tracking.json").exists()  # nothing to resume: the folder is the run
    assert [p.name for p in (job / "tensorboard").iterdir() if p.is_dir()] == []  # one run per job, not two


def test_mlflow_groups_a_sweeps_jobs_in_one_experiment_named_after_it(smoke, tmp_path):
    from mlflow.tracking import MlflowClient

    job = sweep_job(tmp_path)
    cfg = smoke("logger=mlflow", *SHORT)
    train(cfg, job)
    store = f"sqlite:///{(tmp_path / 'shift' / 'mlflow.db').resolve()}"  # the sweep folder's store
    saved = json.loads((job / "tracking.json").read_text())["mlflow"]
    assert saved["tracking_uri"] == store and saved["experiment"] == "shift"
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("shift")
    runs = client.search_runs([experiment.experiment_id])
    assert [(r.info.run_id, r.info.run_name, r.info.status) for r in runs] == [(saved["run_id"], job.name, "FINISHED")]
    assert runs[0].data.params["optimizer.lr"] == str(cfg.optimizer.lr)
    assert runs[0].data.params["target_domain.syn_dvd.domain"] == "dvd"
    assert "resume" not in runs[0].data.params
    assert_holds(mlflow_metrics(client, saved["run_id"]), job)


def test_wandb_writes_an_offline_run_in_the_run_folder_grouped_by_sweep(smoke, tmp_path):
    job = sweep_job(tmp_path)
    cfg = smoke("logger=wandb", *SHORT)
    train(cfg, job)
    saved = json.loads((job / "tracking.json").read_text())["wandb"]
    folders = sorted((job / "wandb").glob("offline-run-*"))
    assert len(folders) == 1 and folders[0].name.endswith(saved["id"])
    info, history, config = wandb_run(folders[0])
    assert info == {"id": saved["id"], "name": job.name, "group": "shift", "project": "xdt"}
    assert config["optimizer.lr"] == pytest.approx(float(cfg.optimizer.lr))
    assert_holds(history, job)


def test_a_resumed_run_continues_its_tracker_runs(smoke, tmp_path, monkeypatch):
    """Cut during step 5 (after the checkpoint of step 3 and the log line of step 4), then resumed: one MLflow
    run, one W&B run id (two offline segments, which wandb sync uploads as one run), one TensorBoard run with
    step 4 once (the cut segment's is purged)."""
    run = tmp_path / "run"
    step = engine.train_step

    def cut(training, state, *args):
        if state.step == 4:
            raise RuntimeError("cut off")
        return step(training, state, *args)

    monkeypatch.setattr(engine, "train_step", cut)
    with pytest.raises(RuntimeError, match="cut off"):
        train(smoke("logger=[tensorboard,mlflow,wandb]", *SHORT), run)
    monkeypatch.setattr(engine, "train_step", step)
    first = json.loads((run / "tracking.json").read_text())
    from mlflow.tracking import MlflowClient

    client = MlflowClient(first["mlflow"]["tracking_uri"])
    assert client.get_run(first["mlflow"]["run_id"]).info.status == "FAILED"

    train(smoke(f"resume={run}"), tmp_path / "ignored")
    assert json.loads((run / "tracking.json").read_text()) == first
    assert first["mlflow"]["tracking_uri"] == f"sqlite:///{run.resolve() / 'mlflow.db'}"  # a single run's own store
    runs = client.search_runs([client.get_experiment_by_name("xdt").experiment_id])
    assert [(r.info.run_id, r.info.status) for r in runs] == [(first["mlflow"]["run_id"], "FINISHED")]
    assert_holds(mlflow_metrics(client, first["mlflow"]["run_id"]), run)

    scalars, _ = tensorboard_scalars(run / "tensorboard")
    assert_holds(scalars, run)
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2

    segments = sorted((run / "wandb").glob("offline-run-*"))
    assert len(segments) == 2
    histories = []
    for folder in segments:
        info, history, _ = wandb_run(folder)
        assert info["id"] == first["wandb"]["id"] and info["name"] == "run"
        histories.append(history)
    assert sorted(histories[0]["train/loss"]) == [2, 3, 4] and sorted(histories[1]["train/loss"]) == [4, 6]
    assert histories[1]["train/loss"][4] == pytest.approx(histories[0]["train/loss"][4], rel=1e-6)  # exact resume
    merged = {name: {**histories[0].get(name, {}), **values} for name, values in histories[1].items()}
    assert_holds(merged, run)


def test_a_pretraining_stage_logs_as_a_run_named_inside_its_run(smoke, tmp_path):
    """xdt pretrain's task through the same engine: the stage <run>/pretrain is a tracker run of its own, in the
    run's store, under metrics.jsonl's names (perplexity and loss per domain)."""
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    train(smoke("logger=mlflow", "+pretrain.text_from=target", "+pretrain.max_steps=2", "+pretrain.eval_interval=2",
                "+pretrain.task.text_splits=[unlabeled,train]", "max_steps=2", "eval_interval=2"), run)
    client = MlflowClient(f"sqlite:///{run.resolve() / 'mlflow.db'}")
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("xdt").experiment_id])}
    assert set(runs) == {"run", "run/pretrain"}
    stage = mlflow_metrics(client, runs["run/pretrain"].info.run_id)
    for record in records(run / "pretrain"):
        for name, value in tracking.numbers(record["eval"], "eval").items():
            assert stage[name][record["step"]] == pytest.approx(value, rel=1e-6), name
    assert "final/selected_step" in stage


# ---- failures -----------------------------------------------------------------------------------------

def test_a_tracker_that_fails_while_training_is_turned_off_and_the_run_goes_on(smoke, tmp_path, caplog):
    cfg = smoke("logger=tensorboard")
    trackers = tracking.Tracking(cfg, tmp_path)
    accelerator = make_accelerator(cfg.hardware, log_with=trackers.log_with)
    with trackers.session(accelerator, 0):
        tensorboard_tracker = trackers.trackers[0]

        def broken(*args, **kwargs):
            raise OSError("disk quota exceeded")

        tensorboard_tracker.writer.add_scalar = broken
        with caplog.at_level(logging.WARNING):
            trackers.train(1, {"loss": 0.5})
            trackers.train(2, {"loss": 0.4})
    warnings = [r.getMessage() for r in caplog.records if "stopped logging" in r.getMessage()]
    assert warnings == ["TensorBoard stopped logging at step 1 (disk quota exceeded); training goes on and "
                        "metrics.jsonl keeps every record"]


def test_a_missing_package_is_named_with_the_pip_install_before_anything_is_written(smoke, tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "installed", lambda module: module != "wandb")
    run = tmp_path / "run"
    with pytest.raises(XdtError, match=r"logger=wandb needs wandb, which is not installed: pip install wandb \(or, "
                                       r"in xdt's folder, pip install -e '\.\[wandb\]'"):
        train(smoke("logger=[tensorboard,wandb]"), run)
    assert not (run / "config.yaml").exists() and (run / "failed").is_file()


def test_the_cli_prints_the_missing_package_once_and_exits_1(tmp_path):
    """As a user sees it (the package's absence played by replacing the import check in the process)."""
    code = ("import sys, xdt.tracking as t; t.installed = lambda module: module != 'tensorboard'; "
            "from xdt.cli import main; main(sys.argv[1:])")
    result = subprocess.run([sys.executable, "-c", code, "train", "debug=smoke", "logger=tensorboard",
                             f"hydra.run.dir={tmp_path / 'run'}", f"data_dir={DATA_DIR}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "pip install tensorboard" in line]
    assert lines == ["xdt train: logger=tensorboard needs tensorboard, which is not installed: pip install tensorboard "
                     "(or, in xdt's folder, pip install -e '.[tensorboard]'; '.[tracking]' installs all three "
                     "trackers)"], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_an_unknown_logger_is_refused_with_the_options(tmp_path):
    result = run_xdt("train", "logger=comet", cwd=tmp_path, timeout=300)
    assert result.returncode == 1
    assert "Could not find 'logger/comet'" in result.stderr
    assert all(f"\t{name}" in result.stderr for name in ("mlflow", "none", "tensorboard", "wandb")), result.stderr


def test_an_unknown_tracker_setting_is_named(smoke, tmp_path):
    with pytest.raises(XdtError, match=r"logger\.mlflow\.tracking_url is not a setting of the MLflow logger \(its "
                                       r"settings: logger\.mlflow\.tracking_uri, logger\.mlflow\.experiment\)"):
        train(smoke("logger=mlflow", "+logger.mlflow.tracking_url=http://x"), tmp_path / "run")
    with pytest.raises(XdtError, match=r"logger\.wandb\.mode='cloud' is not valid: choose online, offline, disabled"):
        train(smoke("logger=wandb", "logger.wandb.mode=cloud"), tmp_path / "run2")


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_mlflow_server_that_does_not_answer_refuses_the_run_before_config_yaml(smoke, tmp_path, monkeypatch):
    uri = f"http://127.0.0.1:{closed_port()}"
    run = tmp_path / "run"
    with pytest.raises(XdtError, match=rf"logger\.mlflow\.tracking_uri={uri}: no MLflow server answers there "
                                       r"\(.*refused.*\); start it .*Nothing was written to the run"):
        train(smoke("logger=mlflow", f"logger.mlflow.tracking_uri={uri}"), run)
    assert not (run / "config.yaml").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # MLflow's own variable, checked the same way
    with pytest.raises(XdtError, match=rf"\$MLFLOW_TRACKING_URI \(logger\.mlflow\.tracking_uri is null, so the "
                                       rf"environment's is used\)={uri}: no MLflow server answers there"):
        train(smoke("logger=mlflow"), tmp_path / "run2")


def test_an_mlflow_database_in_a_missing_folder_is_refused_before_config_yaml(smoke, tmp_path):
    uri = f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"
    with pytest.raises(XdtError, match=rf"logger\.mlflow\.tracking_uri={uri}: the folder {tmp_path / 'nowhere'} does "
                                       r"not exist, so MLflow cannot create its database there"):
        train(smoke("logger=mlflow", f"logger.mlflow.tracking_uri={uri}"), tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_a_tracker_that_cannot_start_stops_the_run_before_its_first_step_and_keeps_it(smoke, tmp_path,
                                                                                        monkeypatch):
    from mlflow.exceptions import MlflowException

    def locked(*args, **kwargs):
        raise MlflowException("database is locked")

    run = tmp_path / "run"
    start_run = mlflow.start_run
    monkeypatch.setattr(mlflow, "start_run", locked)
    with pytest.raises(XdtError, match=rf"logger\.mlflow: MLflow could not start a run \(database is locked\); the "
                                       rf"run is kept and has not trained further: once MLflow works, continue it "
                                       rf"with resume={run}"):
        train(smoke("logger=mlflow", "max_steps=2", "eval_interval=2"), run)
    assert (run / "config.yaml").is_file() and (run / "failed").is_file() and not (run / "metrics.jsonl").exists()
    monkeypatch.setattr(mlflow, "start_run", start_run)
    assert train(smoke(f"resume={run}"), tmp_path / "ignored")["steps"] == 2
    assert (run / "done").is_file() and not (run / "failed").exists()


def test_any_http_answer_counts_as_a_server():
    """A server that answers with an error (a login page, a 404 at its root) is there: the run goes ahead."""
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        tracking.check_tracking_uri(f"http://127.0.0.1:{server.server_port}", "logger.mlflow.tracking_uri")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("name, message", [
    ("", r"logger\.mlflow\.experiment='' is not valid: MLflow needs a name with at least one visible character"),
    ("   ", r"logger\.mlflow\.experiment='   ' is not valid"),
    ("x" * 501, r"logger\.mlflow\.experiment is 501 characters long; MLflow accepts at most 500"),
    ("shift\nday 2", r"logger\.mlflow\.experiment='shift\\nday 2' holds control characters \('\\n'\)"),
])
def test_an_experiment_name_mlflow_rejects_is_refused_before_config_yaml(smoke, tmp_path, name, message):
    cfg = smoke("logger=mlflow")
    cfg.logger.mlflow.experiment = name
    with pytest.raises(XdtError, match=message):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_names_mlflow_would_refuse_are_made_acceptable():
    assert tracking._mlflow_name("eval/target/my+data/test/accuracy") == "eval/target/my_data/test/accuracy"
    assert tracking._mlflow_name("eval/../x") == "eval/_/x"


# ---- what is sent, and where ------------------------------------------------------------------------------

def test_hyperparameters_are_the_flattened_config_without_how_it_was_started(smoke):
    cfg = smoke("logger=tensorboard", "resume=null")
    flat = tracking.hyperparameters(cfg)
    assert flat["optimizer.lr"] == cfg.optimizer.lr and flat["l2sp.alpha"] == 0.0
    assert flat["target_domain.shots"] == 0 and flat["epochs"] == "null"
    assert flat["logger.tensorboard"] == "{}"
    assert "resume" not in flat
    assert all(isinstance(value, (bool, int, float, str)) for value in flat.values())


def test_numbers_are_named_by_their_json_path():
    assert tracking.numbers({"a": {"b": 1, "c": "text", "d": [1, 2], "e": None}, "f": True, "g": 0.5}, "final") == \
        {"final/a/b": 1, "final/f": 1, "final/g": 0.5}


def test_a_run_is_named_after_its_folder_and_grouped_by_its_sweep(tmp_path):
    single = tracking.identity(tmp_path / "10-42-07")
    assert (single.name, single.root, single.group) == ("10-42-07", (tmp_path / "10-42-07").resolve(), None)
    job = sweep_job(tmp_path, "3_strategy=dann")
    ident = tracking.identity(job)
    assert (ident.name, ident.root, ident.group) == ("3_strategy=dann", (tmp_path / "shift").resolve(), "shift")
    stage = tracking.identity(job / "pretrain", stage_of=job)
    assert (stage.name, stage.root, stage.group) == ("3_strategy=dann/pretrain", (tmp_path / "shift").resolve(),
                                                      "shift")


def test_logger_none_builds_no_tracker(smoke):
    assert tracking.Tracking(smoke(), Path("unused")).log_with is None
    assert compose_config(["logger=none"]).logger == {}
    assert tracking.chosen(compose_config(["logger=[tensorboard,wandb]"])) == ["tensorboard", "wandb"]


def test_wandb_runs_offline_unless_asked_or_logged_in(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert tracking.wandb_mode(None) == "offline"  # no key anywhere
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password not-a-real-key\n")
    (tmp_path / "netrc").chmod(0o600)
    assert tracking.wandb_mode(None) == "online"  # what `wandb login` leaves
    assert tracking.wandb_mode("offline") == "offline"  # the key wins
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.wandb_mode(None) == "disabled"  # passed on explicitly: wandb reads it once per process
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / "netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.wandb_mode(None) == "online"


def test_every_tracker_setting_is_one_the_code_knows():
    """configs/logger/<name>.yaml and TRACKERS[name].settings name the same keys."""
    import yaml

    from conftest import CONFIG_DIR

    for name, spec in tracking.TRACKERS.items():
        node = yaml.safe_load((CONFIG_DIR / "logger" / f"{name}.yaml").read_text())[name]
        assert tuple(node) == spec.settings, name
    assert sorted(p.stem for p in (CONFIG_DIR / "logger").glob("*.yaml")) == sorted([*tracking.TRACKERS, "none"])

"""Evaluation at inference speed (issue 23): inference mode, scores that do not depend on the evaluation batch
size, and no scoring during training of the sets nothing reads before the end (track_targets=false), with the
log saying which."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from xdt.strategies.base import Strategy
from xdt.train import train


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("overrides", [[], ["strategy=reptile", "target_domain.shots=8", "max_steps=4",
                                            "eval_interval=2"]], ids=["erm", "reptile_shots"])
def test_evaluation_scores_in_inference_mode_and_training_goes_on(smoke, tmp_path, monkeypatch, overrides):
    """Every scoring forward pass runs in inference mode; a strategy that adapts to shots (gradient steps inside
    evaluation) still adapts, and training after an evaluation still has gradients."""
    modes = []
    predict = Strategy.predict_with_features

    def watched(self, batch):
        modes.append(torch.is_inference_mode_enabled())
        return predict(self, batch)

    monkeypatch.setattr(Strategy, "predict_with_features", watched)
    result = train(smoke(*overrides), tmp_path / "run")
    assert modes and all(modes)
    assert result["steps"] == int(smoke(*overrides).max_steps)
    assert [r["step"] for r in records(tmp_path / "run")] == list(range(int(smoke(*overrides).eval_interval),
                                                                         result["steps"] + 1,
                                                                         int(smoke(*overrides).eval_interval)))


def test_scores_do_not_depend_on_the_eval_batch_size(smoke, tmp_path):
    """Sorted by length, examples share batches with others of about their length whatever the batch size;
    padding can move a logit in its last bits but not a prediction: the same accuracies and F1."""
    one = train(smoke("eval_batch_size=1"), tmp_path / "one")
    large = train(smoke("eval_batch_size=512"), tmp_path / "large")
    assert one["selected_step"] == large["selected_step"]
    for name, scores in one["metrics"].items():
        for metric in ("accuracy", "f1_macro"):
            assert large["metrics"][name][metric] == scores[metric], (name, metric)
        for metric in ("roc_auc", "entropy"):
            assert large["metrics"][name][metric] == pytest.approx(scores[metric], abs=1e-5), (name, metric)


def test_untracked_sets_are_not_scored_during_training_and_the_log_says_which(smoke, tmp_path, caplog):
    """track_targets=false: training scores source validation only (what selection and early stopping read);
    the log names the sets it leaves out; at the end only those are scored, on the chosen checkpoint, and the
    final metrics are those of a run that scored everything at every evaluation."""
    tracked = train(smoke(), tmp_path / "tracked")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="xdt"):
        untracked = train(smoke("track_targets=false"), tmp_path / "untracked")
    assert all(set(r["eval"]) == {"source/syn_books/validation"} for r in records(tmp_path / "untracked"))
    log = caplog.text
    others = sorted(name for name in tracked["metrics"] if name != "source/syn_books/validation")
    said = next(line for line in log.splitlines() if "not scored during training" in line)
    assert all(name in said.split("not scored during training")[1] for name in others)
    end = next(line for line in log.splitlines() if "on the checkpoint of step" in line)
    assert "source/syn_books/validation" not in end and all(name in end for name in others)
    assert untracked["selected_step"] == tracked["selected_step"]
    assert sorted(untracked["metrics"]) == sorted(tracked["metrics"])
    for name, scores in tracked["metrics"].items():
        assert untracked["metrics"][name] == pytest.approx(scores, abs=1e-9), name


def test_tracked_runs_log_no_unscored_sets(smoke, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="xdt"):
        train(smoke(), tmp_path / "run")
    assert "not scored during training" not in caplog.text
    assert "on the checkpoint of step" not in caplog.text

"""The three-stage pipeline end to end at toy size, and its resume."""

from __future__ import annotations

import json

import pytest

from agents.pipeline import STAGES, PipelineConfig, run_pipeline


@pytest.fixture(scope="module")
def pipeline_run(synthetic_root, tmp_path_factory):
    exp = tmp_path_factory.mktemp("pipeline_exp")
    mp = pytest.MonkeyPatch()
    mp.setenv("NAVSIM_EXP_ROOT", str(exp))
    config = PipelineConfig.preset("toy", data_root=str(synthetic_root), output_dir=str(exp / "pipeline"))
    report = run_pipeline(config)
    yield config, report
    mp.undo()


def test_pipeline_writes_the_report(pipeline_run):
    config, report = pipeline_run
    text = (report / "report.md").read_text()
    for label in ("ConstantVelocity", "EgoStatusMLP", "TransFuser-style", "VLA-IL", "VLA-IL+RL (RWM reward)",
                  "VLA-IL+RL (rule-based reward)", "VLA-IL, RWM mode choice",
                  "VLA-IL+RL (RWM reward), RWM mode choice", "Human"):
        assert f"| {label} |" in text
    table = json.loads((report / "table.json").read_text())
    guided = json.loads((config.folder() / "guided" / "vla_il_guided" / "config.json").read_text())
    assert guided == {"agent": "vla_reward_guided", "reward_weight": config.guided_reward_weight}
    assert 0.0 <= table["vla_il_guided"]["EPDMS"] <= 1.0
    assert 0.0 <= table["constant_velocity"]["EPDMS"] <= 1.0
    assert table["human"]["EPDMS"] > table["constant_velocity"]["EPDMS"]
    assert (report / "rl_curves.png").stat().st_size > 1000
    assert (report / "rwm_vs_epdms.png").stat().st_size > 1000
    stages = json.loads((config.folder() / "stages.json").read_text())
    assert set(STAGES) - {"report"} <= set(stages)
    held_out = stages["rwm"]["result"]["validation"]  # the in-domain fidelity, next to navtest's
    assert {"pearson", "epdms_rwm_pick", "gap_to_best"} <= set(held_out)
    assert "Held-out navtrain scenes (the training maps" in text


def test_pipeline_resumes_without_redoing_stages(pipeline_run, capsys):
    config, _ = pipeline_run
    before = json.loads((config.folder() / "stages.json").read_text())
    run_pipeline(config)
    after = json.loads((config.folder() / "stages.json").read_text())
    assert before == after
    assert "done before, reusing" in capsys.readouterr().out


def test_other_rl_seeds_invalidate_the_rl_and_eval_stages(tmp_path):
    from agents.pipeline import StageLog, expected_rl_runs, rl_run_names

    one, three = PipelineConfig.preset("toy", seeds=(0,)), PipelineConfig.preset("toy", seeds=(0, 1, 2))
    recorded = {"rwm": [{"run_dir": str(tmp_path / "rl" / "rwm_seed0"), "exported": "x"}],
                "epdms": [{"run_dir": str(tmp_path / "rl" / "epdms_seed0"), "exported": "y"}]}
    assert rl_run_names(recorded) == rl_run_names(expected_rl_runs(one))
    assert rl_run_names(recorded) != rl_run_names(expected_rl_runs(three))
    log = StageLog(tmp_path)
    for stage in ("il", "rl", "eval"):
        log.record(stage, recorded, 1.0)
    log.forget("rl", "eval")
    again = StageLog(tmp_path)  # what a resumed pipeline reads back
    assert again.done("il") and not again.done("rl") and not again.done("eval")
    again.record("eval", {}, 3.0)
    again.record("rl", recorded, 2.0)  # redone out of order: the report still lists the stages in pipeline order
    assert list(again.seconds()) == ["il", "rl", "eval"] and again.seconds()["rl"] == 2.0


def test_parallel_jobs_return_results_in_order_and_raise_a_jobs_error():
    import math

    from agents.pipeline import JobPool, gather

    for jobs in (2, 1):  # spawned processes, and in-process
        with JobPool(jobs) as pool:
            first = [pool.submit(math.pow, *call) for call in [(2, 3), (3, 2), (5, 1)]]
            later = [pool.submit(math.sqrt, 4.0), pool.submit(math.sqrt, -1.0)]
            assert gather(first) == [8.0, 9.0, 5.0]
            with pytest.raises(ValueError, match="math domain error"):
                gather(later)
            assert later[0].result() == 2.0  # the other jobs still finish


def test_the_rwm_variant_is_one_argument():
    from irlvla_env.cli import build_parser

    args = build_parser().parse_args(["pipeline", "--preset", "toy", "--rwm-variant", "rwm-large"])
    assert args.rwm_variant == "rwm-large"
    assert PipelineConfig.preset("toy", rwm_variant=args.rwm_variant).rwm_variant == "rwm-large"
    assert PipelineConfig.preset("default").rwm_variant == "rwm"

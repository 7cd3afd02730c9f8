import pytest

from fastadasp.cli import main
from fastadasp.runtime.calibrate import select_sparse_layer


def test_no_reduction_means_zero_transfer_entropy(tiny):
    lm = tiny("tiny-llama")
    calibration = [lm.synthetic_prompt(seed=s) for s in range(2)]
    result = select_sparse_layer(lm, calibration, ratio=0.0)
    assert all(score == pytest.approx(0.0, abs=1e-9) for score in result.scores.values())
    assert result.selected_layer == 0  # ties go to the lower layer


def test_selection_is_the_smallest_score(tiny):
    lm = tiny("tiny-qwen2-audio")
    calibration = [lm.synthetic_prompt(seed=s) for s in range(2)]
    result = select_sparse_layer(lm, calibration, ratio=0.5, candidate_layers=[0, 1, 2, 3])
    assert set(result.scores) == {0, 1, 2, 3}
    assert result.selected_layer == min(result.scores, key=lambda k: (result.scores[k], k))
    assert max(result.scores.values()) > 0


def test_cli_select_layer(capsys):
    assert main(["select-layer", "--model", "tiny-llama", "--calibration-samples", "2", "--json"]) == 0
    assert '"selected_layer"' in capsys.readouterr().out

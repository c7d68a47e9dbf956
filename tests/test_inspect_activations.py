"""
Tests for inspect_activations.py: per-digit mean maps against a direct computation, dead
channels, skewness and kurtosis against known values, and the script end to end.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import inspect_activations
from inspect_activations import dead_channels, mean_activations, plot_histograms, plot_maps, skew_kurtosis
from model import Classifier
from train import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def test_mean_maps_equal_direct_computation():
    torch.manual_seed(0)
    model = Classifier().eval()
    x = torch.rand(37, 1, 32, 32)
    y = torch.arange(37) % 10
    maps = mean_activations(model, x, y, batch_size=8)  # batches that cut across digits
    assert sorted(maps) == [2, 5, 8]
    assert maps[2].shape == (10, 8, 16, 16) and maps[5].shape == (10, 16, 8, 8) and maps[8].shape == (10, 32, 2, 2)
    for j in (2, 5, 8):
        for d in range(10):
            direct = model.layers[:j + 1](x[y == d]).mean(0)
            torch.testing.assert_close(maps[j][d], direct, rtol=1e-5, atol=1e-6)

def test_dead_channels():
    maps = torch.rand(10, 4, 3, 3) + 0.5
    maps[:, 1] = 0              # never fires
    maps[:, 3] = 1e-4           # fires, but far below 1% of the largest
    maps[0, 2] = 1e-4           # silent for one digit only: not dead
    dead, limit = dead_channels(maps, threshold=0.01)
    assert dead == [1, 3]
    assert limit == pytest.approx(0.01 * maps.mean(dim=(2, 3)).max().item())

def test_skew_kurtosis_closed_form():
    # Bernoulli(1/4): skew (1 - 2p)/sqrt(p(1-p)) = 2/sqrt(3), excess kurtosis (1 - 6p(1-p))/(p(1-p)) = -2/3
    skew, kurt = skew_kurtosis(np.array([[0.0], [0.0], [0.0], [1.0]]))
    assert skew[0] == pytest.approx(2 / np.sqrt(3)) and kurt[0] == pytest.approx(-2 / 3)

def test_skew_kurtosis_normal_and_exponential_samples():
    rng = np.random.default_rng(0)
    f = np.stack([rng.standard_normal(400_000), rng.exponential(size=400_000)], axis=1)
    skew, kurt = skew_kurtosis(f)
    assert abs(skew[0]) < 0.02 and abs(kurt[0]) < 0.05   # normal: 0 and 0
    assert skew[1] == pytest.approx(2, abs=0.1)          # exponential: 2 and 6
    assert kurt[1] == pytest.approx(6, abs=0.6)

def test_figures_are_written(tmp_path):
    plot_maps(torch.rand(10, 3, 4, 4), tmp_path / 'maps.png', 'test')
    plot_histograms(np.random.default_rng(0).standard_normal((500, 16)), tmp_path / 'hist.png')
    for name in ('maps.png', 'hist.png'):
        assert (tmp_path / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['hist.png', 'maps.png']

def run_script(*args):
    return subprocess.run([sys.executable, 'inspect_activations.py', *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)

def test_missing_or_wrong_checkpoint(tmp_path, capsys):
    r = run_script('--checkpoint', tmp_path / 'none.pt')  # a real `python inspect_activations.py`
    assert r.returncode == 1 and 'run python train.py first' in r.stderr
    assert 'Traceback' not in r.stderr
    torch.save({'model': torch.nn.Linear(2, 2).state_dict()}, tmp_path / 'other.pt')
    with pytest.raises(SystemExit) as e:
        inspect_activations.main(['--checkpoint', str(tmp_path / 'other.pt')])
    assert e.value.code == 1 and 'do not fit model.Classifier' in capsys.readouterr().err

def test_script_end_to_end(tmp_path, capsys):
    # a randomly initialised model stands in for a trained one; the data is the real test set
    torch.manual_seed(0)
    save_checkpoint(tmp_path / 'c.pt', Classifier(), epoch=0, val_acc=0.1)
    inspect_activations.main(['--checkpoint', str(tmp_path / 'c.pt'), '--out-dir', str(tmp_path),
                              '--device', 'cpu'])
    stdout = capsys.readouterr().out
    for level in range(3):
        assert f'level {level}' in stdout
    assert 'before the ReLU' in stdout and 'after the ReLU' in stdout
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ['activations_level0.png', 'activations_level1.png', 'activations_level2.png',
                       'c.pt', 'feature_histograms.png']

def test_bad_dead_threshold(capsys):
    with pytest.raises(SystemExit) as e:
        inspect_activations.main(['--dead-threshold', '1.5'])
    assert e.value.code == 2
    assert '--dead-threshold must be a fraction in [0, 1), got 1.5' in capsys.readouterr().err

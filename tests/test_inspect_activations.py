"""
Tests for inspect_activations.py: per-digit mean maps against a direct computation, dead
channels, skewness and kurtosis against known values, the confusion matrix and the
mistakes against direct counts, every flag, and the script end to end.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import inspect_activations
from inspect_activations import (confusion_matrix, dead_channels, mean_activations, mistakes, normality_summary,
                                 plot_histograms, plot_maps, predict, skew_kurtosis, top_confusions)
from model import Classifier
from networks import network, other_network, save_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize('name', ['blog', 'batchnorm', 'extra conv', 'wider'])
def test_mean_maps_equal_direct_computation(name):
    model, levels, _, _ = network(name)
    model.eval()
    x = torch.rand(37, 1, 32, 32)
    y = torch.arange(37) % 10
    maps = mean_activations(model, x, y, batch_size=8)  # batches that cut across digits
    assert sorted(maps) == levels                        # the pooling layers, wherever the edit put them
    for j in levels:
        for d in range(10):
            direct = model.layers[:j + 1](x[y == d]).mean(0)
            torch.testing.assert_close(maps[j][d], direct, rtol=1e-5, atol=1e-6)
    if name == 'blog':
        assert maps[2].shape == (10, 8, 16, 16) and maps[5].shape == (10, 16, 8, 8) and maps[8].shape == (10, 32, 2, 2)

def test_dead_channels():
    maps = torch.rand(10, 4, 3, 3, generator=torch.Generator().manual_seed(0)) * 0.4 + 0.5
    maps[:, 0] = 1.0            # the largest channel mean: exactly 1
    maps[:, 1] = 0              # never fires
    maps[:, 3] = 1e-4           # fires, but far below 1% of the largest
    maps[0, 2] = 1e-4           # silent for one digit only: not dead
    dead, limit = dead_channels(maps, threshold=0.01)
    assert dead == [1, 3]
    assert limit == pytest.approx(0.01)
    # threshold 0: only the channels that are exactly zero for every digit
    assert dead_channels(maps, threshold=0.0)[0] == [1]
    # a channel exactly at the limit counts as dead ("at or below"); 2**-6, a mean without rounding
    maps[:, 3] = 2 ** -6
    assert dead_channels(maps, threshold=2 ** -6) == ([1, 3], 2 ** -6)

def test_a_steadily_negative_channel_is_not_dead():
    maps = torch.ones(10, 3, 2, 2)
    maps[:, 1] = -0.1                                                  # after a LeakyReLU, say: it fires
    maps[:, 2] = -1e-4
    assert dead_channels(maps, threshold=0.01)[0] == [2]

def test_a_level_that_is_all_zero_is_all_dead():
    dead, limit = dead_channels(torch.zeros(10, 5, 2, 2), threshold=0.01)
    assert dead == [0, 1, 2, 3, 4] and limit == 0

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

def test_normality_summary_counts():
    rng = np.random.default_rng(0)
    f = np.stack([rng.standard_normal(100_000), rng.standard_normal(100_000),
                  rng.exponential(size=100_000), np.zeros(100_000)], axis=1)
    line = normality_summary(f)
    assert '2/3 features within +-0.5 on both' in line and '1 constant features left out' in line
    skew, _ = skew_kurtosis(f[:, :3])
    assert f'median |skew| {np.median(np.abs(skew)):.2f}' in line

def test_confusion_matrix_and_mistakes_against_direct_counts():
    torch.manual_seed(0)
    model = Classifier().train()        # dropout on: predict must switch it off
    x, y = torch.rand(57, 1, 32, 32), torch.arange(57) % 10
    pred, confidence = predict(model, x, batch_size=10)
    assert model.training
    model.eval()
    p = model(x).softmax(1)
    assert torch.equal(pred, p.argmax(1))
    torch.testing.assert_close(confidence, p.max(1).values)
    C = confusion_matrix(y, pred)
    direct = torch.zeros(10, 10, dtype=torch.long)
    for t, q in zip(y.tolist(), pred.tolist()):
        direct[t, q] += 1
    assert torch.equal(C, direct)
    assert C.sum(1).tolist() == torch.bincount(y, minlength=10).tolist()    # rows: the images of each digit
    assert C.trace().item() == (pred == y).sum().item()                      # the diagonal: the correct ones
    order = mistakes(y, pred, confidence)
    assert sorted(order.tolist()) == torch.nonzero(pred != y).flatten().tolist()   # exactly the mistakes
    assert (confidence[order].diff() <= 0).all()                             # the most confident first

def test_top_confusions():
    C = torch.diag(torch.full((10,), 100))
    C[4, 9], C[7, 2], C[3, 5], C[9, 4] = 12, 7, 9, 1
    assert top_confusions(C) == [(4, 9, 12), (3, 5, 9), (7, 2, 7)]
    assert top_confusions(torch.diag(torch.ones(10, dtype=torch.long))) == []   # no mistakes

def test_a_constant_feature_draws_without_a_warning(tmp_path):
    import warnings
    f = np.random.default_rng(0).standard_normal((500, 16))
    f[:, 3] = 0.0                                                       # a dead feature
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        plot_histograms(f, tmp_path / 'hist.png')

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
    torch.save({'model': torch.nn.Linear(2, 2).state_dict(), 'architecture': Classifier().architecture()},
               tmp_path / 'other.pt')
    with pytest.raises(SystemExit) as e:
        inspect_activations.main(['--checkpoint', str(tmp_path / 'other.pt')])
    assert e.value.code == 1 and 'do not fit model.Classifier' in capsys.readouterr().err

@pytest.fixture
def small_test_set(monkeypatch):
    """Make the script load 200 test digits of the real MNIST, and record its --data-dir."""
    from mnist import load_mnist
    asked = []
    try:
        data = load_mnist(ROOT / 'data')
    except FileNotFoundError as e:
        pytest.fail(f'this test needs the four real MNIST files in {ROOT / "data"}:\n{e}')
    def small(data_dir):
        asked.append(data_dir)
        return data[0][:10], data[1][:10], data[2][:200], data[3][:200]
    monkeypatch.setattr(inspect_activations, 'load_mnist', small)
    return asked, data[2][:200, None], data[3][:200]

def test_script_end_to_end(tmp_path, capsys, small_test_set):
    # a randomly initialised model stands in for a trained one
    asked, x, y = small_test_set
    torch.manual_seed(0)
    model = Classifier().eval()
    save_model(tmp_path / 'c.pt', model, epoch=0, val_acc=None)   # a checkpoint written on Ctrl-C
    inspect_activations.main(['--checkpoint', str(tmp_path / 'c.pt'), '--out-dir', str(tmp_path),
                              '--device', 'cpu', '--mistakes', '7', '--data-dir', 'elsewhere'])
    stdout = capsys.readouterr().out
    assert asked == ['elsewhere']
    for level in range(len(model.levels())):
        assert f'level {level}' in stdout
    with torch.no_grad():
        f_pre, f_post = model.features(x, after_relu=False).numpy(), model.features(x, after_relu=True).numpy()
    assert "before the ReLU (the blog's features): " + normality_summary(f_pre) in stdout
    assert 'after the ReLU:                       ' + normality_summary(f_post) in stdout
    pred, confidence = predict(model, x)
    C = confusion_matrix(y, pred)
    assert f'accuracy {100 * (pred == y).float().mean():.2f}%' in stdout
    assert f'{(pred != y).sum()} mistakes; the most frequent: {top_confusions(C)[0][0]} -> {top_confusions(C)[0][1]}' in stdout
    assert f'(7 of the {(pred != y).sum()} mistakes)' in stdout
    digit0 = 100 * ((pred == 0) & (y == 0)).sum() / (y == 0).sum()
    assert f'per digit: 0 {digit0:.1f}%' in stdout
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted([*(f'activations_level{k}.png' for k in range(len(model.levels()))),
                              'c.pt', 'feature_histograms.png', 'mistakes.png'])

def test_dead_threshold_flag_reaches_the_result(tmp_path, capsys, small_test_set):
    _, x, y = small_test_set
    torch.manual_seed(0)
    model = Classifier().eval()
    save_model(tmp_path / 'c.pt', model, epoch=7, val_acc=0.9876)     # as train.py writes a validated epoch
    maps = mean_activations(model, x, y)
    for threshold in (0.0, 0.5):
        inspect_activations.main(['--checkpoint', str(tmp_path / 'c.pt'), '--out-dir', str(tmp_path),
                                  '--device', 'cpu', '--dead-threshold', str(threshold)])
        stdout = capsys.readouterr().out
        assert f"loaded {tmp_path / 'c.pt'} (epoch 7, val acc 98.76%) | network: {model.summary()}" in stdout
        for level, j in enumerate(model.levels()):
            dead, limit = dead_channels(maps[j], threshold)
            assert f'dead channels {dead} (mean activation <= {limit:.4f} = {threshold} x the largest' in stdout

@pytest.mark.parametrize('argv, message', [
    (['--dead-threshold', '1.5'], '--dead-threshold must be a fraction in [0, 1), got 1.5'),
    (['--mistakes', '0'], '--mistakes must be at least 1, got 0'),
    (['--device', 'gpu'], "'gpu' is not a torch device"),
])
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        inspect_activations.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err

def test_out_dir_a_file_and_ctrl_c(tmp_path, capsys, small_test_set, monkeypatch):
    save_model(tmp_path / 'c.pt', Classifier(), epoch=0)
    (tmp_path / 'file').write_bytes(b'')
    with pytest.raises(SystemExit) as e:
        inspect_activations.main(['--checkpoint', str(tmp_path / 'c.pt'), '--out-dir', str(tmp_path / 'file'),
                                  '--device', 'cpu'])
    err = capsys.readouterr().err
    assert e.value.code == 1 and f'cannot write into {tmp_path / "file"}/' in err and 'Traceback' not in err
    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(inspect_activations, 'plot_histograms', interrupted)   # Ctrl-C while plotting
    with pytest.raises(SystemExit) as e:
        inspect_activations.main(['--checkpoint', str(tmp_path / 'c.pt'), '--out-dir', str(tmp_path / 'out'),
                                  '--device', 'cpu'])
    assert e.value.code == 130 and 'interrupted' in capsys.readouterr().err
    assert [p.name for p in (tmp_path / 'out').iterdir() if p.name.startswith('.')] == []

def test_a_checkpoint_of_another_network_is_one_line(tmp_path):
    save_model(tmp_path / 'c.pt', other_network(), epoch=1)
    r = run_script('--checkpoint', tmp_path / 'c.pt', '--out-dir', tmp_path / 'out', '--device', 'cpu')
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr
    assert f'{tmp_path / "c.pt"} was trained with another network than model.py builds now (layers.' in r.stderr
    assert 'python train.py trains the current one' in r.stderr

def test_an_edited_network_is_drawn_as_it_is(tmp_path, capsys, small_test_set, monkeypatch):
    # a network with batch norm and an extra convolution: four levels' worth of layers found
    # in it, figures and lines for each, the feature count its own
    import model as model_py
    layers = network('batchnorm')[0].layers
    extra = [*layers[:12], torch.nn.Conv2d(32, 64, 3, padding='same'), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
             torch.nn.Flatten(), torch.nn.Dropout(), torch.nn.Linear(64, 10)]
    class Edited(Classifier):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Sequential(*extra)
    monkeypatch.setattr(model_py, 'Classifier', Edited)
    model = Edited().eval()
    save_model(tmp_path / 'c.pt', model, epoch=0)
    inspect_activations.main(['--checkpoint', str(tmp_path / 'c.pt'), '--out-dir', str(tmp_path), '--device', 'cpu'])
    stdout = capsys.readouterr().out
    assert model.levels() == [3, 7, 11, 14]
    assert 'levels 8x16x16, 16x8x8, 32x2x2, 64x1x1 | 64 features' in stdout
    for level, (j, c) in enumerate(zip(model.levels(), (8, 16, 32, 64))):
        assert f'level {level} (layers[{j}], {c} channels)' in stdout
        assert (tmp_path / f'activations_level{level}.png').exists()
    # back to model.py's network (the blog's three levels) in the same folder: the fourth level's figure goes
    monkeypatch.setattr(model_py, 'Classifier', Classifier)
    save_model(tmp_path / 'c.pt', Classifier(), epoch=0)
    inspect_activations.main(['--checkpoint', str(tmp_path / 'c.pt'), '--out-dir', str(tmp_path), '--device', 'cpu'])
    n = len(Classifier().levels())                                    # 3, unless model.py was edited
    out = capsys.readouterr().out
    assert all(f'removed {tmp_path / f"activations_level{k}.png"}: this network has {n} levels' in out for k in range(n, 4))
    assert sorted(p.name for p in tmp_path.glob('activations_level*')) == [f'activations_level{k}.png' for k in range(n)]

def test_a_network_without_pooling_layers(tmp_path, capsys, small_test_set, monkeypatch):
    # strided convolutions halve the resolution instead: no levels to draw, said in one line
    import model as model_py
    class Strided(Classifier):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                                              torch.nn.Conv2d(8, 16, 3, stride=4, padding=1), torch.nn.ReLU(),
                                              torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 10))
    monkeypatch.setattr(model_py, 'Classifier', Strided)
    save_model(tmp_path / 'c.pt', Strided(), epoch=0)
    assert mean_activations(Strided(), torch.rand(20, 1, 32, 32), torch.arange(20) % 10) == {}
    inspect_activations.main(['--checkpoint', str(tmp_path / 'c.pt'), '--out-dir', str(tmp_path), '--device', 'cpu'])
    out = capsys.readouterr().out
    assert 'levels none | 256 features' in out
    assert 'the network has no pooling layers (model.POOLING): no activation maps to draw' in out
    assert not list(tmp_path.glob('activations_level*'))

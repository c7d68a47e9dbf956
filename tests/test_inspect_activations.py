"""
Tests for inspect_activations.py: the per-digit mean maps against a direct computation on the
blog's network and on edited ones, dead channels, skewness and kurtosis against closed forms,
the confusion matrix and the mistakes against direct counts, and the script end to end.
"""

import numpy as np
import pytest
import torch

import inspect_activations
import model as model_py
from inspect_activations import (confusion_matrix, dead_channels, mean_activations,
                                 normality_summary, predict, skew_kurtosis, top_confusions)
from networks import network, save_model, use_network


@pytest.mark.parametrize('name, levels', [('blog', [2, 5, 8]), ('batchnorm', [3, 7, 11]),
                                          ('extra conv', [2, 5, 10])])
def test_mean_maps_equal_a_direct_computation(name, levels):
    model = network(name).eval()
    x, y = torch.rand(37, 1, 32, 32), torch.arange(37) % 10
    maps = mean_activations(model, x, y)
    assert list(maps) == levels                               # the pooling layers, where they are
    with torch.no_grad():
        for i in levels:
            for d in range(10):
                direct = model.levels[:i + 1](x[y == d]).mean(0)
                torch.testing.assert_close(maps[i][d], direct, rtol=1e-5, atol=1e-6)

def test_dead_channels():
    maps = torch.rand(10, 5, 3, 3, generator=torch.Generator().manual_seed(0)) * 0.4 + 0.5
    maps[:, 1] = 0                                            # never fires
    maps[:, 3] = 0.004                                        # at most 1% of the largest (<= 0.9)
    maps[4, 3] = 0.5                                          # ... but fires for digit 4
    maps[:, 4] = -0.6                                         # steadily negative: it fires
    assert dead_channels(maps, 0.01) == ([1], pytest.approx(0.01 * maps.abs().mean((2, 3)).max()))
    assert dead_channels(maps, 0.0)[0] == [1]
    assert dead_channels(torch.zeros(10, 3, 2, 2), 0.0)[0] == [0, 1, 2]   # all zero: all dead

def test_skew_kurtosis_closed_form_and_samples():
    # [0, 0, 0, 4]: m2 = 3, m3 = 6, m4 = 21, so skew 6 / 3^1.5 and excess kurtosis 21 / 9 - 3
    skew, kurt = skew_kurtosis(np.array([[0.0], [0], [0], [4]], dtype=np.float32))
    assert skew[0] == pytest.approx(6 / 3 ** 1.5) and kurt[0] == pytest.approx(-2 / 3)
    rng = np.random.default_rng(0)
    f = np.stack([rng.standard_normal(100_000), rng.exponential(size=100_000)], 1)
    skew, kurt = skew_kurtosis(f)
    assert skew == pytest.approx([0, 2], abs=0.05) and kurt == pytest.approx([0, 6], abs=0.3)

def test_normality_summary_counts():
    rng = np.random.default_rng(0)
    f = np.stack([rng.standard_normal(20_000), rng.standard_normal(20_000),
                  rng.exponential(size=20_000), np.ones(20_000)], 1)
    assert normality_summary(f).endswith(
        ' | 2/3 features within +-0.5 on both | 1 constant features left out')

def test_confusion_matrix_and_top_confusions_against_direct_counts():
    g = torch.Generator().manual_seed(0)
    y, pred = torch.randint(0, 10, (500,), generator=g), torch.randint(0, 10, (500,), generator=g)
    C = confusion_matrix(y, pred)
    assert all(C[t, p] == ((y == t) & (pred == p)).sum() for t in range(10) for p in range(10))
    C = torch.zeros(10, 10, dtype=torch.long)
    C[5, 3], C[7, 2], C[4, 9], C[1, 1], C[0, 6] = 9, 8, 8, 99, 1
    # off the diagonal, ties in the order (true, predicted)
    assert top_confusions(C) == [(5, 3, 9), (4, 9, 8), (7, 2, 8)]
    assert top_confusions(C, n=10)[-1] == (0, 6, 1) and len(top_confusions(C, n=10)) == 4

def test_plot_mistakes_draws_the_most_confident_first(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(inspect_activations, 'plot_tiles', lambda tiles, path, title, labels:
                        drawn.update(tiles=tiles, title=title, labels=labels))
    x = torch.arange(6.0)[:, None, None, None].expand(6, 1, 32, 32) / 10   # image i holds i / 10
    y, pred = torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([0, 7, 2, 8, 9, 5])
    confidence = torch.tensor([0.9, 0.6, 0.8, 0.95, 0.7, 0.5])
    shown = inspect_activations.plot_mistakes(x, y, pred, confidence, tmp_path / 'm.png', n=2,
                                              per_row=4)
    assert shown == 2 and drawn['labels'] == [['3->8 0.95', '4->9 0.70']]
    assert drawn['tiles'].shape == (1, 4, 28, 28) and np.isnan(drawn['tiles'][0, 2:]).all()
    assert drawn['tiles'][0, 0, 0, 0] == pytest.approx(0.3)           # image 3, the surest
    assert 'the 2 most confident of 3 mistakes' in drawn['title']

# -----------------------------------------------------------------------------
# the script, on 300 test digits, with a random network standing in for a trained one

@pytest.fixture
def small_test_set(monkeypatch, mnist_data):
    asked = []
    def load_mnist(data_dir):
        asked.append(data_dir)
        return mnist_data[0][:10], mnist_data[1][:10], mnist_data[2][:300], mnist_data[3][:300]
    monkeypatch.setattr(inspect_activations, 'load_mnist', load_mnist)
    return asked, mnist_data[2][:300, None], mnist_data[3][:300]

def run(tmp_path, *args):
    inspect_activations.main(['--checkpoint', str(tmp_path / 'c.pt'), '--device', 'cpu',
                              '--out-dir', str(tmp_path / 'out'), *map(str, args)])

@pytest.mark.parametrize('name', ['model.py', 'extra conv'])
def test_the_script_end_to_end(tmp_path, capsys, small_test_set, monkeypatch, name):
    asked, x, y = small_test_set
    torch.manual_seed(0)
    model = (model_py.Classifier() if name == 'model.py' else use_network(monkeypatch, name)).eval()
    # the edited network's checkpoint as Ctrl-C leaves it: its last epoch not validated
    val_acc, loaded = ((0.98765, '(epoch 7, val acc 98.77%)') if name == 'model.py'
                       else (None, '(epoch 7)'))
    save_model(tmp_path / 'c.pt', model, epoch=7, val_acc=val_acc)
    run(tmp_path, '--mistakes', 7, '--dead-threshold', 0.2, '--data-dir', 'elsewhere')
    out = capsys.readouterr().out
    assert asked == ['elsewhere']
    assert f'loaded {tmp_path / "c.pt"} {loaded} | network: {model_py.summary(model)}' in out
    maps = mean_activations(model, x, y)
    for level, (i, m) in enumerate(maps.items()):
        dead, limit = dead_channels(m, 0.2)
        assert (f'level {level} (levels[{i}], {m.shape[1]} channels): dead channels {dead} (mean '
                f'activation <= {limit:.4f} = 0.2 x the largest') in out
    with torch.no_grad():
        f_pre, f_post = (f.numpy() for f in model.features(x))
    assert "before the ReLU (the blog's features): " + normality_summary(f_pre) in out
    assert 'after the ReLU:                       ' + normality_summary(f_post) in out
    pred, _ = predict(model, x)
    (t, p, c), = top_confusions(confusion_matrix(y, pred), n=1)
    assert f'accuracy {100 * (pred == y).double().mean():.2f}% | per digit: 0 ' \
           f'{100 * (pred[y == 0] == 0).double().mean():.1f}% | 1 ' in out
    assert f'{(pred != y).sum()} mistakes; the most frequent: {t} -> {p}: {c}' in out
    assert 'the 7 most confident mistakes' in out
    levels = [f'activations_level{k}.png' for k in range(len(maps))]
    assert sorted(f.name for f in (tmp_path / 'out').iterdir()) == sorted(
        [*levels, 'feature_histograms.png', 'mistakes.png'])

def test_predict_is_the_argmax_and_its_softmax_probability():
    model = network('blog').eval()
    x = torch.rand(30, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    pred, confidence = inspect_activations.predict(model, x, batch_size=7)
    with torch.no_grad():
        logits = model(x)
    p = logits.exp() / logits.exp().sum(1, keepdim=True)            # softmax written out
    assert torch.equal(pred, logits.argmax(1))
    torch.testing.assert_close(confidence, p.max(1).values)

def test_plot_histograms_draws_the_first_16_features_under_its_title(tmp_path, monkeypatch):
    f = np.arange(20)[None, :] * 10.0 + np.random.default_rng(0).random((500, 20))   # (500, 20)
    figures = []
    monkeypatch.setattr(inspect_activations, 'save_figure', lambda fig, path: figures.append(fig))
    inspect_activations.plot_histograms(f, tmp_path / 'h.png', 'some title', bins=10)
    fig, = figures
    assert fig._suptitle.get_text() == 'some title' and len(fig.axes) == 16
    for k, ax in enumerate(fig.axes):
        bars = ax.patches                                         # the histogram's bars
        assert sum(b.get_height() for b in bars) == 500           # every image counted
        assert abs(bars[0].get_x() - f[:, k].min()) < 1e-9        # of feature k, column k

"""
Tests for model.py: the blog's network (two tests pin it), the features against a
functional computation and against a walk through the layers of edited networks, the
summary, checkpoints of this network and of others, the classifier's name, the device.
"""

import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import model as model_py
from model import Classifier, classifier_id, get_device, load_classifier, summary
from networks import EDITS, blog, network, save_model, use_network, walk_features

# -----------------------------------------------------------------------------
# the blog's network: these two tests fail after an edit of model.py, and say so

PINNED = ('this test pins the blog post\'s network; it fails after an edit of model.py, which '
          'is expected: every other test follows the network model.py builds')

def test_model_py_builds_the_blogs_layer_list():
    model = Classifier()
    assert repr([*model.levels, *model.head]) == repr(blog()), PINNED

def test_model_py_has_the_blogs_parameter_count():
    # 80 + 1,168 + 4,640 + 1,290: the blog's code (its text says 16,554; see model.py)
    assert sum(p.numel() for p in Classifier().parameters()) == 7178, PINNED

# -----------------------------------------------------------------------------
# the features

def test_blog_features_match_a_functional_computation():
    model = network('blog').eval()
    x = torch.rand(5, 1, 32, 32)
    c1, c2, c3, lin = (model.levels[0], model.levels[3], model.levels[6], model.head[2])
    h = F.max_pool2d(F.relu(F.conv2d(x, c1.weight, c1.bias, padding=1)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, c2.weight, c2.bias, padding=1)), 2)
    h = F.conv2d(h, c3.weight, c3.bias, padding=1)                   # (5, 32, 8, 8)
    with torch.no_grad():
        before, after = model.features(x)
        logits = model(x)
    # the blog's: avg_pool2d(layers[:7](x), 4), before the ReLU; after: the linear layer's input
    torch.testing.assert_close(before, F.avg_pool2d(h, 4).flatten(1))          # (5, 128)
    torch.testing.assert_close(after, F.avg_pool2d(F.relu(h), 4).flatten(1))   # (5, 128)
    torch.testing.assert_close(logits, F.linear(after, lin.weight, lin.bias))

@pytest.mark.parametrize('name', ['blog', *EDITS])
def test_features_of_each_network(name):
    model = network(name).eval()
    x = torch.rand(6, 1, 32, 32)
    with torch.no_grad():
        expected = walk_features(model, x)
        before, after = model.features(x)
        torch.testing.assert_close((before, after), expected, rtol=0, atol=0)
        torch.testing.assert_close(model.head(after), model(x), rtol=0, atol=0)
    assert (before < 0).any() and not torch.equal(before, after)   # the activation is between

def test_features_are_read_before_the_heads_dropout():
    model = network('blog').train()                   # dropout on
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), model.eval().features(x), rtol=0, atol=0)

# -----------------------------------------------------------------------------
# the summary

def test_summary_of_the_blogs_network():
    assert summary(network('blog')) == \
        'levels 8x16x16, 16x8x8, 32x2x2 | 128 features | 7,178 parameters'

@pytest.mark.parametrize('name, levels, D', [
    ('wider', '16x16x16, 32x8x8, 64x2x2', 256), ('extra conv', '8x16x16, 16x8x8, 32x2x2', 128),
    ('global average pool, GELU', '8x16x16, 16x8x8, 32x1x1', 32)])
def test_summary_follows_the_network(name, levels, D):
    model = network(name)
    n = sum(p.numel() for p in model.parameters())
    assert summary(model) == f'levels {levels} | {D} features | {n:,} parameters'

def test_summary_changes_nothing():
    # train mode, batch norm, dropout: no random number drawn, no running statistic learned
    model = network('batchnorm').train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    summary(model)
    assert torch.equal(torch.get_rng_state(), rng) and model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

# -----------------------------------------------------------------------------
# checkpoints

def test_load_classifier_round_trip(tmp_path):
    model = Classifier()                              # whatever model.py builds now
    save_model(tmp_path / 'c.pt', model, epoch=3, val_acc=0.5)
    loaded, ckpt = load_classifier(tmp_path / 'c.pt')
    assert not loaded.training and ckpt['epoch'] == 3 and ckpt['val_acc'] == 0.5
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), model.parameters()))

def test_load_classifier_refuses_another_network(tmp_path, monkeypatch):
    use_network(monkeypatch, 'blog')                  # model.py builds the blog's network
    tanh = network('blog')
    tanh.levels = nn.Sequential(*[nn.Tanh() if isinstance(m, nn.ReLU) else m for m in tanh.levels])
    save_model(tmp_path / 'tanh.pt', tanh)            # weights that fit: another activation
    with pytest.raises(ValueError) as e:
        load_classifier(tmp_path / 'tanh.pt')
    assert str(e.value) == (f'{tmp_path / "tanh.pt"} was trained with another network than '
                            f'model.py builds now ((1): Tanh() is now (1): ReLU()); '
                            f'python train.py trains the current one')
    save_model(tmp_path / 'wider.pt', network('wider'))
    with pytest.raises(ValueError, match=r'\(0\): Conv2d\(1, 16, .* is now \(0\): Conv2d\(1, 8,'):
        load_classifier(tmp_path / 'wider.pt')
    save_model(tmp_path / 'longer.pt', network('no dropout'))    # a layer fewer
    with pytest.raises(ValueError, match='another network'):
        load_classifier(tmp_path / 'longer.pt')

def test_load_classifier_no_or_an_old_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match=f'{tmp_path / "none.pt"}: no such checkpoint; '
                                                'python train.py writes one'):
        load_classifier(tmp_path / 'none.pt')
    torch.save({'model': Classifier().state_dict()}, tmp_path / 'old.pt')   # no network recorded
    with pytest.raises(ValueError, match=r'old.pt was trained with another network than model.py '
                                         r'builds now \(it records none\); python train.py trains'):
        load_classifier(tmp_path / 'old.pt')

def test_the_shared_classifier_loads_and_has_the_name_the_readme_gives(mnist_data):
    from conftest import ROOT
    try:
        model, ckpt = load_classifier(model_py.SHARED_CHECKPOINT)    # into today's model.py
    except ValueError as e:
        pytest.fail(f'{PINNED}: {e}')
    assert classifier_id(model) == model_py.SHARED_ID
    assert model_py.SHARED_CHECKPOINT.name == f'classifier_{model_py.SHARED_ID}.pt'
    assert f'classifier_{model_py.SHARED_ID}.pt' in (ROOT / 'README.md').read_text()
    _, _, x_val, y_val = mnist_data
    with torch.no_grad():
        accuracy = (model(x_val[:, None]).argmax(1) == y_val).double().mean().item()
    assert accuracy == ckpt['val_acc'] == 0.9903                     # the README's 99.03%
    assert model_py.SHARED_CHECKPOINT.stat().st_size < 100_000       # tens of KB

def test_the_default_checkpoint_is_yours_if_you_trained_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert model_py.default_checkpoint() == model_py.SHARED_CHECKPOINT
    (tmp_path / 'out').mkdir()
    save_model(tmp_path / 'out' / 'classifier.pt', Classifier(), epoch=2)
    assert model_py.default_checkpoint() == Path('out/classifier.pt')
    assert load_classifier()[1]['epoch'] == 2 and load_classifier()[1]['path'] == 'out/classifier.pt'

def test_classifier_id_names_the_weights():
    model = network('blog')
    expected = hashlib.sha256(b''.join(v.numpy().tobytes() for v in model.state_dict().values()))
    assert classifier_id(model) == expected.hexdigest()[:12]
    assert classifier_id(model.to(memory_format=torch.channels_last)) == expected.hexdigest()[:12]
    with torch.no_grad():
        model.head[2].bias[3] += 1e-6              # one weight, one step: another classifier
    assert classifier_id(model) != expected.hexdigest()[:12]

# -----------------------------------------------------------------------------
# the device

def test_get_device(monkeypatch):
    for cuda, mps, expected in ((True, True, 'cuda'), (False, True, 'mps'), (False, False, 'cpu')):
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: mps)
        assert get_device('auto') == expected and get_device('cpu') == 'cpu'
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: True)
    assert get_device('mps') == 'mps'
    for name in ('cuda', 'cuda:1', 'gpu', 'meta'):   # none here, or not a device at all
        with pytest.raises(ValueError, match=rf"^--device {name}: this PyTorch \(.*\) can use "
                                             rf"\['mps', 'cpu'\]$"):
            get_device(name)

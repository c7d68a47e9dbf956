"""
Tests for train.py on a small synthetic dataset: the loss goes down, the checkpoint round
trip, bit-for-bit reproducibility on the CPU, and the stop on a non-finite loss.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import Classifier, load_classifier
from train import evaluate, train

ROOT = Path(__file__).resolve().parent.parent


def synthetic(n, seed=0):
    """n noisy 32x32 images whose class is where a bright 6x6 square sits (10 places)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = 0.1 * torch.rand(n, 1, 32, 32, generator=g)
    for i, c in enumerate(y.tolist()):
        r, col = 3 + 6 * (c // 5) * 2, 3 + 5 * (c % 5)
        x[i, 0, r:r + 6, col:col + 6] += 0.9
    return x, y

def run(seed=0, epochs=3, **kwargs):
    torch.manual_seed(seed)
    x, y = synthetic(320)
    x_val, y_val = synthetic(100, seed=1)
    model = Classifier()
    history = train(model, x, y, x_val, y_val, epochs=epochs, batch_size=32, lr=1e-2, **kwargs)
    return model, history, (x_val, y_val)

def test_loss_goes_down_and_it_learns():
    model, history, (x_val, y_val) = run(epochs=4)
    losses = history['train_loss']
    assert losses[0] > 1.0                       # about ln(10) = 2.3 at the start
    assert losses[-1] < 0.5 * losses[0], losses
    assert history['val_epoch'] == [4]          # log_every=10 > epochs: only the last one
    val_loss, val_acc = evaluate(model, x_val, y_val)
    assert val_acc > 0.9 and val_loss < 1.0
    assert (val_loss, val_acc) == (history['val_loss'][-1], history['val_acc'][-1])

def test_same_seed_same_weights_bit_for_bit():
    a, _, _ = run(seed=3)
    b, _, _ = run(seed=3)
    c, _, _ = run(seed=4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)

def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / 'out' / 'classifier.pt'
    model, history, (x_val, _) = run(epochs=2, log_every=1, ckpt_path=path, config={'lr': 1e-2})
    loaded, ckpt = load_classifier(path)
    for name, p in model.state_dict().items():
        assert torch.equal(p, loaded.state_dict()[name]), name
    model.eval()
    torch.testing.assert_close(loaded(x_val), model(x_val), rtol=0, atol=0)
    assert ckpt['epoch'] == 2 and ckpt['config'] == {'lr': 1e-2}
    assert ckpt['history'] == history and ckpt['val_acc'] == history['val_acc'][-1]
    assert not loaded.training
    assert [p.name for p in path.parent.iterdir()] == ['classifier.pt']  # no temp file left

def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    # poison the logits from the third training step on: epoch 1 (steps 1-2) is fine
    torch.manual_seed(0)
    x, y = synthetic(64)
    model = Classifier()
    steps = []
    def poison(module, inputs, output):
        if module.training:
            steps.append(1)
            if len(steps) > 2:
                return output * float('nan')
    model.layers[11].register_forward_hook(poison)
    path = tmp_path / 'classifier.pt'
    with pytest.raises(FloatingPointError, match='became nan at epoch 2') as e:
        train(model, x, y, x, y, epochs=5, batch_size=32, log_every=1, ckpt_path=path)
    assert 'last good checkpoint (epoch 1)' in str(e.value)
    good, ckpt = load_classifier(path)
    assert ckpt['epoch'] == 1
    assert all(torch.isfinite(p).all() for p in good.parameters())

def test_cli_rejects_bad_arguments():
    result = subprocess.run([sys.executable, 'train.py', '--epochs', '0'], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert '--epochs must be at least 1, got 0' in result.stderr
    result = subprocess.run([sys.executable, 'train.py', '--lr', '-1'], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and '--lr must be positive, got -1.0' in result.stderr

"""
Tests for train.py on a small synthetic dataset: one epoch against a loop written here,
the mean loss and the evaluation against direct computations, the checkpoint round trip,
bit-for-bit reproducibility on the CPU, Ctrl-C and --resume, the stop on a non-finite loss,
and the effect of every command-line flag.
"""

import hashlib
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import train as train_py
from model import Classifier, load_classifier
from networks import save_model
from train import blog_epoch, evaluate, train, train_epoch

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

def same_weights(a, b):
    sa, sb = a if isinstance(a, dict) else a.state_dict(), b if isinstance(b, dict) else b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)

# -----------------------------------------------------------------------------
# one epoch, and the evaluation

class Recorder(nn.Module):
    """A linear model that records which images it saw: image i is filled with the value i."""
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(32 * 32, 10)
        self.seen = []
    def forward(self, x):
        self.seen.append(x[:, 0, 0, 0].round().long().tolist())
        return self.linear(x.flatten(1))

def test_train_epoch_visits_every_image_once_in_a_new_order():
    N, B = 37, 8
    x = torch.arange(N, dtype=torch.float32).view(N, 1, 1, 1).expand(N, 1, 32, 32).contiguous()
    y = torch.arange(N) % 10
    model = Recorder()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    orders = []
    for _ in range(2):
        model.seen = []
        train_epoch(model, optimizer, x, y, B)
        assert [len(b) for b in model.seen] == [8, 8, 8, 8, 5]  # the last batch is smaller
        orders.append([i for b in model.seen for i in b])
    for order in orders:
        assert sorted(order) == list(range(N))                  # every image, exactly once
    assert orders[0] != orders[1] and orders[0] != list(range(N))  # shuffled, anew every epoch

def test_train_epoch_returns_the_mean_loss_over_all_images():
    # lr 0: the weights never change, so the mean of the batch losses weighted by batch
    # size is the cross-entropy over the whole set; 37 images in batches of 8 (last one 5)
    torch.manual_seed(0)
    x, y = torch.randn(37, 1, 32, 32), torch.randint(0, 10, (37,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))
    loss = train_epoch(model, torch.optim.SGD(model.parameters(), lr=0.0), x, y, 8)
    assert loss.shape == ()
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y), rtol=1e-6, atol=0)

def test_train_epoch_equals_a_loop_written_here():
    # the textbook loop: shuffle, batches, forward, loss, zero_grad, backward, step; dropout on
    x, y = synthetic(70)
    torch.manual_seed(1)
    model = Classifier().eval()  # train_epoch must switch dropout on itself
    reference = Classifier()
    reference.load_state_dict(model.state_dict())
    opt, opt_ref = (torch.optim.Adam(m.parameters(), lr=1e-2) for m in (model, reference))
    torch.manual_seed(2)
    for _ in range(2):
        train_epoch(model, opt, x, y, 16)
    torch.manual_seed(2)
    reference.train()
    for _ in range(2):
        perm = torch.randperm(70)
        for i in range(0, 70, 16):
            idx = perm[i:i + 16]
            loss = F.cross_entropy(reference(x[idx]), y[idx])
            opt_ref.zero_grad()
            loss.backward()
            opt_ref.step()
    assert same_weights(model, reference)
    assert model.training

def test_evaluate_equals_a_direct_computation():
    torch.manual_seed(0)
    model = Classifier().train()        # dropout on: evaluate must switch it off
    x, y = torch.rand(23, 1, 32, 32), torch.randint(0, 10, (23,))
    loss, acc = evaluate(model, x, y, batch_size=5)  # 5 batches, the last one of 3
    model.eval()
    logits = model(x)
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert acc == (logits.argmax(1) == y).sum().item() / 23
    model.train()
    evaluate(model, x, y)
    assert model.training               # the mode is restored, both ways
    model.eval()
    evaluate(model, x, y)
    assert not model.training

def test_blog_epoch_returns_the_mean_batch_loss():
    torch.manual_seed(0)
    x, y = torch.randn(40, 32, 32), torch.randint(0, 10, (40,))   # the blog's (N, 32, 32)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))
    loss = blog_epoch(model, torch.optim.SGD(model.parameters(), lr=0.0), x, y, 8, 'cpu')
    assert loss == pytest.approx(F.cross_entropy(model(x[:, None]), y).item(), rel=1e-5)

# -----------------------------------------------------------------------------
# the training run

def test_loss_goes_down_and_it_learns():
    model, history, (x_val, y_val) = run(epochs=4)
    losses = history['train_loss']
    assert losses[0] > 1.0                       # about ln(10) = 2.3 at the start
    assert losses[-1] < 0.5 * losses[0], losses
    assert history['epoch'] == [1, 2, 3, 4] and len(history['seconds']) == 4
    assert history['val_epoch'] == [4]          # log_every=10 > epochs: only the last one
    val_loss, val_acc = evaluate(model, x_val, y_val)
    assert val_acc > 0.9 and val_loss < 1.0
    assert (val_loss, val_acc) == (history['val_loss'][-1], history['val_acc'][-1])

def test_evaluation_and_checkpoint_cadence(tmp_path, monkeypatch):
    saved = []
    real_save = train_py.save_checkpoint
    monkeypatch.setattr(train_py, 'save_checkpoint',
                        lambda path, state: (saved.append(state['epoch']), real_save(path, state)))
    _, history, _ = run(epochs=5, log_every=2, ckpt_path=tmp_path / 'c.pt')
    assert history['val_epoch'] == [2, 4, 5] and saved == [1, 2, 3, 4, 5]   # evaluated every 2, saved every epoch

def test_same_seed_same_weights_bit_for_bit():
    a, _, _ = run(seed=3)
    b, _, _ = run(seed=3)
    c, _, _ = run(seed=4)
    assert same_weights(a, b)
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)

def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / 'out' / 'classifier.pt'
    model, history, (x_val, _) = run(epochs=2, log_every=1, ckpt_path=path, config={'lr': 1e-2})
    loaded, ckpt = load_classifier(path)
    assert same_weights(model, loaded)
    model.eval()
    torch.testing.assert_close(loaded(x_val), model(x_val), rtol=0, atol=0)
    assert ckpt['epoch'] == 2 and ckpt['config'] == {'lr': 1e-2}
    assert ckpt['history'] == history and ckpt['val_acc'] == history['val_acc'][-1]
    assert ckpt['optimizer']['param_groups'][0]['lr'] == 1e-2
    assert ckpt['optimizer']['state'][0]['step'].item() == 2 * 10   # 2 epochs of 320 / 32 steps
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
    model.layers[-1].register_forward_hook(poison)
    path = tmp_path / 'classifier.pt'
    with pytest.raises(FloatingPointError, match='became nan at epoch 2') as e:
        train(model, x, y, x, y, epochs=5, batch_size=32, log_every=1, ckpt_path=path)
    assert 'last good checkpoint (epoch 1)' in str(e.value)
    good, ckpt = load_classifier(path)
    assert ckpt['epoch'] == 1
    assert all(torch.isfinite(p).all() for p in good.parameters())

# -----------------------------------------------------------------------------
# Ctrl-C and resume, in train()

def interrupt_at_step(model, step):
    """Raise KeyboardInterrupt at the given training step (1-based), halfway through an epoch."""
    count = []
    def hook(module, inputs, output):
        if module.training:
            count.append(1)
            if len(count) == step:
                raise KeyboardInterrupt
    return model.layers[-1].register_forward_hook(hook)

def test_interrupted_and_resumed_equals_unbroken_bit_for_bit(tmp_path):
    unbroken, history, _ = run(seed=5, epochs=4, log_every=3)
    # the same run, stopped in the middle of epoch 3 (10 steps per epoch: step 25), when the
    # weights have moved on from epoch 2's; the checkpoint must hold epoch 2's end exactly
    torch.manual_seed(5)
    x, y = synthetic(320)
    x_val, y_val = synthetic(100, seed=1)
    model = Classifier()
    handle = interrupt_at_step(model, 25)
    path = tmp_path / 'c.pt'
    with pytest.raises(KeyboardInterrupt) as e:
        train(model, x, y, x_val, y_val, epochs=4, batch_size=32, lr=1e-2, log_every=3, ckpt_path=path)
    assert e.value.args == (2,)
    handle.remove()
    _, ckpt = load_classifier(path)
    assert ckpt['epoch'] == 2 and ckpt['val_acc'] is None       # epoch 2 was not evaluated
    assert ckpt['history']['epoch'] == [1, 2]
    # resume in a fresh model, with a different global random state: the checkpoint's counts
    torch.manual_seed(123)
    resumed = Classifier()
    history2 = train(resumed, x, y, x_val, y_val, epochs=4, batch_size=32, lr=1e-2, log_every=3,
                     ckpt_path=path, resume_from=ckpt)
    assert same_weights(resumed, unbroken)
    for key in ('epoch', 'train_loss', 'val_epoch', 'val_loss', 'val_acc'):
        assert history2[key] == history[key], key
    assert load_classifier(path)[1]['epoch'] == 4

def test_extending_a_finished_run_equals_the_longer_run(tmp_path):
    long_run, _, _ = run(seed=6, epochs=4)
    short, _, (x_val, y_val) = run(seed=6, epochs=2, ckpt_path=tmp_path / 'c.pt')
    _, ckpt = load_classifier(tmp_path / 'c.pt')
    x, y = synthetic(320)
    train(short, x, y, x_val, y_val, epochs=4, batch_size=32, lr=1e-2, resume_from=ckpt)
    assert same_weights(short, long_run)

def test_interrupt_in_the_first_epoch_saves_nothing(tmp_path):
    torch.manual_seed(0)
    x, y = synthetic(64)
    model = Classifier()
    interrupt_at_step(model, 1)
    with pytest.raises(KeyboardInterrupt) as e:
        train(model, x, y, x, y, epochs=2, batch_size=32, ckpt_path=tmp_path / 'c.pt')
    assert e.value.args == (None,) and not (tmp_path / 'c.pt').exists()

# -----------------------------------------------------------------------------
# the command line, in-process, on the synthetic set

@pytest.fixture
def fake_data(monkeypatch):
    """Make train.py's main() load a small synthetic set, and record the --data-dir it asks for."""
    asked = []
    def load_mnist(data_dir):
        asked.append(data_dir)
        (x, y), (x_val, y_val) = synthetic(320), synthetic(100, seed=1)
        return x[:, 0], y, x_val[:, 0], y_val            # (N, 32, 32), as mnist.py returns them
    monkeypatch.setattr(train_py, 'load_mnist', load_mnist)
    return asked

def main(tmp_path, *args, out='out'):
    """Run train.py's main() with a small configuration; return the exit code (0: none)."""
    argv = ['--epochs', '3', '--batch-size', '32', '--lr', '0.01', '--device', 'cpu',
            '--out-dir', tmp_path / out, *args]
    try:
        train_py.main(argv)
    except SystemExit as e:
        return e.code
    return 0

def test_cli_flags_reach_the_run(tmp_path, fake_data, capsys):
    assert main(tmp_path, '--epochs', '4', '--batch-size', '40', '--lr', '0.005', '--seed', '7',
                '--log-every', '3', '--data-dir', 'somewhere') == 0
    assert fake_data == ['somewhere']
    _, ckpt = load_classifier(tmp_path / 'out' / 'classifier.pt')
    assert ckpt['epoch'] == 4 and ckpt['history']['val_epoch'] == [3, 4]
    assert ckpt['optimizer']['param_groups'][0]['lr'] == 0.005
    assert ckpt['optimizer']['state'][0]['step'].item() == 4 * 8     # 4 epochs of 320 / 40 steps
    assert ckpt['config']['seed'] == 7 and ckpt['config']['batch_size'] == 40
    assert (tmp_path / 'out' / 'loss.png').read_bytes()[:4] == b'\x89PNG'
    stdout = capsys.readouterr().out
    assert 'Model accuracy' in stdout and 'median' in stdout and 'img/s' in stdout
    assert f'Model accuracy: {100 * ckpt["val_acc"]:.2f}%' in stdout
    # the name fid.py gives the numbers it measures with this classifier: of the final file
    cid = hashlib.sha256((tmp_path / 'out' / 'classifier.pt').read_bytes()).hexdigest()[:12]
    assert f'(classifier {cid}:' in stdout

def test_cli_seed(tmp_path, fake_data):
    for out, seed in (('a', 1), ('b', 1), ('c', 2)):
        assert main(tmp_path, '--seed', seed, out=out) == 0
    a, b, c = (torch.load(tmp_path / o / 'classifier.pt', weights_only=True)['model'] for o in 'abc')
    assert same_weights(a, b) and not same_weights(a, c)

def test_cli_ctrl_c_then_resume_equals_unbroken(tmp_path, fake_data, monkeypatch, capsys):
    assert main(tmp_path, '--epochs', '4', out='unbroken') == 0
    # Ctrl-C when epoch 3 has already changed the weights but not finished
    real_epoch, calls = train_py.train_epoch, []
    def interrupted_epoch(model, *args):
        calls.append(1)
        loss = real_epoch(model, *args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return loss
    monkeypatch.setattr(train_py, 'train_epoch', interrupted_epoch)
    capsys.readouterr()
    assert main(tmp_path, '--epochs', '4') == 130
    err = capsys.readouterr().err
    assert 'holds epoch 2 (the last completed one)' in err and 'Traceback' not in err
    resume_cmd = err.split('Resume with: ')[1].strip()
    assert resume_cmd.startswith('python train.py --epochs 3 --batch-size 32') and resume_cmd.endswith('--epochs 4 --resume')
    monkeypatch.setattr(train_py, 'train_epoch', real_epoch)
    # the timing line counts only the epochs of this run: make the first two look slow
    ckpt = torch.load(tmp_path / 'out' / 'classifier.pt', weights_only=True)
    ckpt['history']['seconds'] = [100.0, 100.0]
    torch.save(ckpt, tmp_path / 'out' / 'classifier.pt')
    torch.manual_seed(99)  # whatever the global state, the checkpoint's states are restored
    assert main(tmp_path, '--epochs', '4', '--resume') == 0
    stdout = capsys.readouterr().out
    assert 'resuming' in stdout and 'trained 2 epochs in' in stdout
    median = float(stdout.split('| median ')[1].split(' s/epoch')[0])
    assert 0 < median < 10
    a = torch.load(tmp_path / 'unbroken' / 'classifier.pt', weights_only=True)
    b = torch.load(tmp_path / 'out' / 'classifier.pt', weights_only=True)
    assert same_weights(a['model'], b['model'])
    assert a['history']['train_loss'] == b['history']['train_loss'] and b['epoch'] == 4
    # and on to epoch 6: --epochs is the only setting that may change
    assert main(tmp_path, '--epochs', '6', '--resume') == 0
    c = torch.load(tmp_path / 'out' / 'classifier.pt', weights_only=True)
    assert c['epoch'] == 6 and c['history']['epoch'] == [1, 2, 3, 4, 5, 6] and c['config']['epochs'] == 6

@pytest.mark.parametrize('args, message', [
    (['--lr', '0.02'], '--lr 0.01 there, 0.02 now'),
    (['--batch-size', '16'], '--batch-size 32 there, 16 now'),
    (['--seed', '1'], '--seed 0 there, 1 now'),
    (['--epochs', '3'], 'already holds epoch 3, and --epochs is 3'),
])
def test_cli_resume_refuses_other_settings(tmp_path, fake_data, capsys, args, message):
    assert main(tmp_path) == 0
    before = (tmp_path / 'out' / 'classifier.pt').read_bytes()
    capsys.readouterr()
    assert main(tmp_path, '--resume', *args) == 1
    assert message in capsys.readouterr().err
    assert (tmp_path / 'out' / 'classifier.pt').read_bytes() == before

def test_cli_resume_needs_a_resumable_checkpoint(tmp_path, fake_data, capsys):
    assert main(tmp_path, '--resume') == 1
    assert 'no such checkpoint' in capsys.readouterr().err
    path = tmp_path / 'out' / 'classifier.pt'
    save_model(path, Classifier(), epoch=3)  # weights alone: enough to evaluate, not to train on
    assert main(tmp_path, '--resume') == 1
    err = capsys.readouterr().err
    assert err.startswith(f'error: {path}: cannot be resumed: its optimizer, optimizer_name, rng, history, config are missing')
    assert 'It still works for evaluation; train without --resume' in err and err.count('\n') == 1

def test_cli_compare_blog_loop(tmp_path, fake_data, capsys, monkeypatch):
    layouts, real_train_epoch = [], train_py.train_epoch
    def train_epoch(model, *args):                                    # ours runs channels-last, as run() does
        w = model.layers[model.feature_layers()[0]].weight           # (32, 16, 3, 3): the layouts differ
        layouts.append(w.is_contiguous(memory_format=torch.channels_last))
        return real_train_epoch(model, *args)
    monkeypatch.setattr(train_py, 'train_epoch', train_epoch)
    assert main(tmp_path, '--compare-blog-loop', '2') == 0
    assert layouts == [True, True]
    stdout = capsys.readouterr().out
    assert stdout.count('| blog loop |') == 2 and stdout.count('| ours loop |') == 2
    assert 'median over 2 epochs on cpu' in stdout and 'x faster' in stdout
    assert not (tmp_path / 'out').exists()   # it measures, then exits

@pytest.mark.parametrize('argv, message', [
    (['--epochs', '0'], '--epochs must be at least 1, got 0'),
    (['--batch-size', '0'], '--batch-size must be at least 1, got 0'),
    (['--log-every', '0'], '--log-every must be at least 1, got 0'),
    (['--lr', '-1'], '--lr must be positive, got -1.0'),
    (['--lr', 'nan'], '--lr must be positive, got nan'),
    (['--compare-blog-loop', '-1'], '--compare-blog-loop must be 0 (off)'),
    (['--device', 'gpu'], "'gpu' is not a torch device"),
])
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        train_py.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err

# -----------------------------------------------------------------------------
# a real Ctrl-C, on the real data

def test_real_ctrl_c_in_a_real_run(tmp_path):
    """`python train.py`, sent SIGINT during epoch 2: no traceback, epoch 1 kept, resumable."""
    if not any((ROOT / 'data' / n).exists() for n in ('train-images-idx3-ubyte.gz', 'train-images-idx3-ubyte')):
        pytest.fail(f'this test needs the real MNIST files in {ROOT / "data"} (put the four .gz files there, or let mnist.py download them)')
    p = subprocess.Popen([sys.executable, '-u', 'train.py', '--epochs', '3', '--device', 'cpu',
                          '--out-dir', str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in p.stdout:
        if line.startswith('epoch   1 |'):
            p.send_signal(signal.SIGINT)
            break
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert 'Traceback' not in err and 'holds epoch 1' in err
    assert 'Resume with: python train.py --epochs 3 --device cpu --out-dir' in err
    _, ckpt = load_classifier(tmp_path / 'classifier.pt')
    assert ckpt['epoch'] == 1 and math.isfinite(ckpt['history']['train_loss'][0])
    assert sorted(f.name for f in tmp_path.iterdir()) == ['classifier.pt']   # nothing half-written

# -----------------------------------------------------------------------------
# nothing lost, nothing half-written

def test_a_new_run_keeps_the_finished_checkpoint(tmp_path, fake_data, capsys):
    assert main(tmp_path, '--seed', 1) == 0
    first = (tmp_path / 'out' / 'classifier.pt').read_bytes()
    assert main(tmp_path, '--seed', 2) == 0
    assert (tmp_path / 'out' / 'classifier.prev.pt').read_bytes() == first
    assert (tmp_path / 'out' / 'classifier.pt').read_bytes() != first
    assert f'kept the checkpoint that was in {tmp_path / "out" / "classifier.pt"} as' in capsys.readouterr().out

def test_an_unusable_out_dir_is_found_before_training(tmp_path, fake_data, capsys):
    (tmp_path / 'file').write_bytes(b'not a folder')
    assert main(tmp_path, out='file') == 1
    err = capsys.readouterr().err
    assert f'cannot write into {tmp_path / "file"}/' in err and 'Traceback' not in err
    assert fake_data == []                                            # not even the data was loaded

def test_a_full_disk_keeps_the_last_checkpoint(tmp_path, fake_data, monkeypatch, capsys):
    import errno
    assert main(tmp_path, '--epochs', '2', '--log-every', '1') == 0
    ckpt = tmp_path / 'out' / 'classifier.pt'
    before = ckpt.read_bytes()
    real_save = torch.save
    def save_until_full(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)                                   # the temporary file is written...
        raise OSError(errno.ENOSPC, 'No space left on device')        # ...and then the disk is full
    monkeypatch.setattr(torch, 'save', save_until_full)
    assert main(tmp_path, '--epochs', '3', '--log-every', '1', '--resume') == 1
    err = capsys.readouterr().err
    assert f'error: cannot write {ckpt}: No space left on device' in err and 'Traceback' not in err
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ['classifier.pt', 'loss.png']   # no .tmp

def test_ctrl_c_while_loading_the_data(tmp_path, monkeypatch, capsys):
    def interrupted(data_dir):
        raise KeyboardInterrupt
    monkeypatch.setattr(train_py, 'load_mnist', interrupted)
    assert main(tmp_path) == 130
    err = capsys.readouterr().err
    assert 'interrupted' in err and 'Traceback' not in err

@pytest.mark.parametrize('seed', ['-1', str(2 ** 64)])
def test_cli_seed_range(seed, capsys):
    with pytest.raises(SystemExit) as e:
        train_py.main(['--seed', seed])
    assert e.value.code == 2 and f'argument --seed: {seed} is not in [0, 2**64)' in capsys.readouterr().err

def test_resume_needs_every_field(tmp_path, fake_data, capsys):
    assert main(tmp_path, '--epochs', '2') == 0
    ckpt_path = tmp_path / 'out' / 'classifier.pt'
    ckpt = torch.load(ckpt_path, weights_only=True)
    del ckpt['epoch']
    torch.save(ckpt, ckpt_path)
    assert main(tmp_path, '--epochs', '4', '--resume') == 1
    err = capsys.readouterr().err
    assert f'{ckpt_path}: cannot be resumed: its epoch is missing' in err and 'Traceback' not in err

# -----------------------------------------------------------------------------
# an edit of the network or of the optimizer meets an old checkpoint

def test_resume_refuses_a_checkpoint_of_another_network(tmp_path, fake_data, capsys):
    from networks import other_network
    assert main(tmp_path, '--epochs', '2') == 0
    path = tmp_path / 'out' / 'classifier.pt'
    ckpt = torch.load(path, weights_only=True)
    assert ckpt['architecture'] == Classifier().architecture()       # the network it was trained with
    ckpt['architecture'] = other_network().architecture()            # as if model.py changed since
    torch.save(ckpt, path)
    before = path.read_bytes()
    capsys.readouterr()
    assert main(tmp_path, '--epochs', '4', '--resume') == 1
    err = capsys.readouterr().err
    assert err.startswith(f'error: {path} was trained with another network than model.py builds now (layers.')
    assert err.endswith('python train.py trains the current one\n') and err.count('\n') == 1
    assert path.read_bytes() == before
    # without --resume, a new run trains the current network and keeps the old checkpoint
    assert main(tmp_path, '--epochs', '2') == 0
    assert (tmp_path / 'out' / 'classifier.prev.pt').read_bytes() == before
    assert load_classifier(path)[1]['architecture'] == Classifier().architecture()

def test_the_optimizer_is_made_in_one_place(tmp_path, fake_data, monkeypatch, capsys):
    made = []
    def sgd(model, lr):
        made.append(lr)
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    monkeypatch.setattr(train_py, 'make_optimizer', sgd)
    assert main(tmp_path, '--epochs', '2') == 0
    ckpt = torch.load(tmp_path / 'out' / 'classifier.pt', weights_only=True)
    assert ckpt['optimizer_name'].startswith('SGD(momentum=0.9, dampening=0')
    assert ckpt['optimizer']['param_groups'][0]['momentum'] == 0.9
    assert '| optimizer: SGD(momentum=0.9' in capsys.readouterr().out   # the run says which one it uses
    # resume follows it: SGD on with SGD; with Adam back, one line instead of a KeyError
    assert main(tmp_path, '--epochs', '3', '--resume') == 0
    assert torch.load(tmp_path / 'out' / 'classifier.pt', weights_only=True)['epoch'] == 3
    monkeypatch.setattr(train_py, 'make_optimizer', lambda model, lr: torch.optim.Adam(model.parameters(), lr=lr))
    capsys.readouterr()
    assert main(tmp_path, '--epochs', '4', '--resume') == 1
    err = capsys.readouterr().err
    assert 'was trained with the optimizer SGD(momentum=0.9' in err and 'now makes Adam(' in err
    assert err.count('\n') == 1
    monkeypatch.setattr(train_py, 'make_optimizer', sgd)
    # and --compare-blog-loop times both loops with it
    made.clear()
    assert main(tmp_path, '--compare-blog-loop', '1') == 0
    assert made == [0.01] * 3   # its name in the network line, then both loops

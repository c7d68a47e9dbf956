"""
Train the blog's MNIST classifier from the raw IDX bytes, with a hand-written loop.

    python train.py                        # 100 epochs, as in the blog (device: auto)
    python train.py --device cpu --epochs 10
    python train.py --resume --epochs 150  # continue out/classifier.pt up to epoch 150
    python train.py --compare-blog-loop 3  # time the blog's loop against ours, then exit

Writes out/classifier.pt (the weights, and all it takes to understand them and to train on)
and out/loss.png. Follows "Latent Diffusion Series: MNIST Classifier" (Nick Tasios): Adam, lr
1e-3, batches of 256, cross-entropy, 100 epochs, a new permutation per epoch, the test set as
the validation set. The blog's loop, made fast: the data goes to the device once, and the loss
is read back once per epoch, not once per step, since each read waits for the device.
The checkpoint is written every epoch, so Ctrl-C loses at most the epoch in progress; on the
CPU, a run stopped and continued with --resume ends with the weights of an unbroken run, bit for bit.
"""

import argparse
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mnist import check_writable, load_mnist, save_figure, seed_arg, write_atomic
from model import Classifier, classifier_id, get_device, load_classifier

# -----------------------------------------------------------------------------
# the blog's training: the optimizer, one epoch, the evaluation, the loop over epochs, the loss figure

def make_optimizer(model, lr):
    """The blog's optimizer, Adam; training, --resume and --compare-blog-loop all make it here, so
    another is this one line, e.g. torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)."""
    return torch.optim.Adam(model.parameters(), lr=lr)

def train_epoch(model, optimizer, x, y, batch_size):
    """One pass over (x, y) in random order; returns the mean loss as a 0-d device tensor."""
    model.train()
    N = len(x)
    perm = torch.randperm(N, device=x.device)          # (N,) a new order every epoch
    loss_sum = torch.zeros((), device=x.device)
    for i in range(0, N, batch_size):
        idx = perm[i:i + batch_size]                   # (B,) the last batch may be smaller
        xb, yb = x[idx], y[idx]                        # (B, 1, 32, 32), (B,) gathered on the device
        logits = model(xb)                             # (B, 10)
        loss = F.cross_entropy(logits, yb)             # mean over the batch
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # weighted by B: the short last batch counts less (the blog weighs every batch mean alike); no .item() sync
        loss_sum += loss.detach() * len(idx)
    return loss_sum / N

@torch.no_grad()
def evaluate(model, x, y, batch_size=1000):
    """Mean cross-entropy and accuracy of model on (x, y), in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device)
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size])            # (B, 10)
        loss_sum += F.cross_entropy(logits, y[i:i + batch_size], reduction='sum')
        correct += (logits.argmax(1) == y[i:i + batch_size]).sum()
    model.train(was_training)
    return loss_sum.item() / len(x), correct.item() / len(x)

def train(model, x_train, y_train, x_val, y_val, epochs=100, batch_size=256, lr=1e-3,
          log_every=10, ckpt_path=None, config=None, resume_from=None):
    """Train model in place up to epoch `epochs`, validating every log_every epochs and at the
    last; return the loss history. ckpt_path gets a checkpoint every epoch: Ctrl-C raises
    KeyboardInterrupt(the epoch it holds, or None), a NaN loss FloatingPointError before the save.
    resume_from: a checkpoint of this function, to continue after its epoch."""
    device = x_train.device
    optimizer = make_optimizer(model, lr)
    history = {'epoch': [], 'train_loss': [], 'seconds': [], 'val_epoch': [], 'val_loss': [], 'val_acc': []}
    start = saved = 0           # the epoch we start after, and the one the checkpoint holds
    if resume_from is not None:  # --resume: restore() loads weights, optimizer, random states, fills history
        start = saved = restore(resume_from, model, optimizer, history, device)
    try:
        for epoch in range(start + 1, epochs + 1):
            # train, timing only the training pass (the .item() waits for the device)
            t0 = time.perf_counter()
            train_loss = train_epoch(model, optimizer, x_train, y_train, batch_size).item()
            dt = time.perf_counter() - t0
            if not math.isfinite(train_loss):  # stop before the save overwrites the last good epoch
                kept = (f'{ckpt_path} still holds the last good checkpoint (epoch {saved})'
                        if saved else 'no checkpoint was written')
                raise FloatingPointError(f'the train loss became {train_loss} at epoch {epoch}; '
                                         f'training stopped. {kept}. Try a smaller --lr.')
            history['epoch'].append(epoch)
            history['train_loss'].append(train_loss)
            history['seconds'].append(dt)
            line = f'epoch {epoch:3d} | train loss {train_loss:.4f}'
            # every log_every epochs and at the end: validation
            if epoch % log_every == 0 or epoch == epochs:
                val_loss, val_acc = evaluate(model, x_val, y_val)
                history['val_epoch'].append(epoch)
                history['val_loss'].append(val_loss)
                history['val_acc'].append(val_acc)
                line += f' | val loss {val_loss:.4f} | val acc {100 * val_acc:.2f}%'
            # every epoch: the checkpoint, through a temporary file (never half-written)
            if ckpt_path is not None:
                save_checkpoint(ckpt_path, snapshot(model, optimizer, epoch, history, config, device))
                saved = epoch
            print(line + f' | {dt:.2f} s | {len(x_train) / dt / 1000:.1f}k img/s', flush=True)
    except KeyboardInterrupt:
        # Ctrl-C: the epoch in progress is dropped; the checkpoint holds the last completed one
        raise KeyboardInterrupt(saved or None) from None
    return history

def plot_loss(history, path):
    """The blog's loss figure: train and validation loss against epoch."""
    from matplotlib.figure import Figure  # no pyplot: nothing opens a window
    ax = Figure(figsize=(6, 4)).subplots()
    ax.plot(history['epoch'], history['train_loss'], label='train')
    ax.plot(history['val_epoch'], history['val_loss'], 'o-', label='validation')
    ax.set(xlabel='epoch', ylabel='cross-entropy loss', yscale='log')
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(ax.figure, path)

# -----------------------------------------------------------------------------
# the blog's own loop, kept only to measure what the changes above buy

def blog_epoch(model, optimizer, x_train, y_train, batch_size, device):
    """One epoch as the blog's notebook runs it: each batch indexed on the host and copied with
    .to(device), the loss read back after every step."""
    train_ids = torch.randperm(len(x_train))
    avg_loss = 0.0
    for i in range(math.ceil(len(x_train) / batch_size)):
        ids = train_ids[i * batch_size:(i + 1) * batch_size]
        x = x_train[ids, None].to(device)              # (B, 1, 32, 32), copied every step
        y = y_train[ids].to(device)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        avg_loss += loss.item()                        # a host/device sync every step
    return avg_loss / math.ceil(len(x_train) / batch_size)

def compare_loops(x_train, y_train, batch_size, lr, device, rounds):
    """Alternate epochs of the blog's loop and ours on fresh models; print the medians."""
    x_dev, y_dev = x_train[:, None].to(device), y_train.to(device)
    times = {'blog': [], 'ours': []}
    for r in range(rounds):
        for name in ('blog', 'ours'):
            layout = torch.channels_last if name == 'ours' else torch.preserve_format   # ours as in run()
            model = Classifier().to(device, memory_format=layout)
            optimizer = make_optimizer(model, lr)
            t0 = time.perf_counter()
            if name == 'blog':
                blog_epoch(model, optimizer, x_train, y_train, batch_size, device)
            else:
                train_epoch(model, optimizer, x_dev, y_dev, batch_size).item()
            times[name].append(time.perf_counter() - t0)
            print(f'round {r + 1} | {name} loop | {times[name][-1]:.2f} s', flush=True)
    blog, ours = statistics.median(times['blog']), statistics.median(times['ours'])
    print(f'median over {rounds} epochs on {device}: blog loop {blog:.2f} s/epoch '
          f'({len(x_train) / blog / 1000:.1f}k img/s) | train.py loop {ours:.2f} s/epoch '
          f'({len(x_train) / ours / 1000:.1f}k img/s) | {blog / ours:.2f}x faster')

# -----------------------------------------------------------------------------
# the command

def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = argparse.ArgumentParser(description="Train the blog's MNIST classifier.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # data
    parser.add_argument('--data-dir', default='data', help='folder with (or for) the four MNIST IDX files')
    # optimisation (defaults from the blog)
    parser.add_argument('--epochs', type=int, default=100, help='train up to this epoch (also when resuming)')
    parser.add_argument('--batch-size', type=int, default=256, help='images per optimisation step')
    parser.add_argument('--lr', type=float, default=1e-3, help="the optimizer's learning rate (Adam's, in the blog)")
    parser.add_argument('--seed', type=seed_arg, default=0, help='seed for the weights, the order and dropout')
    parser.add_argument('--device', default='auto', help='auto (cuda, then mps, then cpu), or any torch device')
    # output
    parser.add_argument('--log-every', type=int, default=10,
                        help="evaluate every this many epochs (the blog's i_log); checkpoints are written every epoch")
    parser.add_argument('--out-dir', default='out', help='folder for classifier.pt and loss.png')
    parser.add_argument('--resume', action='store_true',
                        help='continue from classifier.pt in --out-dir (after Ctrl-C, or to train longer)')
    # measurement
    parser.add_argument('--compare-blog-loop', type=int, default=0, metavar='ROUNDS',
                        help="time ROUNDS epochs of the blog's loop and of ours, alternating, then exit")
    args = parser.parse_args(argv)
    for name in ('epochs', 'batch_size', 'log_every'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1, got {getattr(args, name)}')
    if not args.lr > 0:
        parser.error(f'--lr must be positive, got {args.lr}')
    if args.compare_blog_loop < 0:
        parser.error(f'--compare-blog-loop must be 0 (off) or a number of rounds, got {args.compare_blog_loop}')
    try:
        args.device = get_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    print(vars(args))

    try:
        run(args, argv, parser)
    except (FileNotFoundError, ValueError, FloatingPointError) as e:  # a bad file, no data, a full disk
        parser.exit(1, f'error: {e}\n')
    except KeyboardInterrupt:  # Ctrl-C outside the training loop: loading, plotting
        parser.exit(130, '\ninterrupted: nothing half-written was left behind\n')

def run(args, argv, parser):
    """main()'s work, once the flags are checked."""
    # the output folder must take our files: found out now, not after an hour of training
    if not args.compare_blog_loop:
        check_writable(args.out_dir)
    # with --resume: the checkpoint to continue, checked before anything else is done
    ckpt_path = Path(args.out_dir) / 'classifier.pt'
    resume_from = checkpoint_to_resume(ckpt_path, args) if args.resume else None

    # the model, checked by summary() (a model.py whose layers do not fit is one line, not a
    # traceback); channels_last (NHWC) makes this narrow network faster on a CPU, same maths
    torch.manual_seed(args.seed)
    model = Classifier().to(args.device).to(memory_format=torch.channels_last)
    print(f'network: {model.summary()} | optimizer: {optimizer_name(make_optimizer(model, args.lr))}')
    if ckpt_path.exists() and not args.resume and not args.compare_blog_loop:
        # a new run: keep the checkpoint that is there (and the yardstick fid.py named by it)
        prev = ckpt_path.with_name('classifier.prev.pt')
        ckpt_path.replace(prev)
        print(f'kept the checkpoint that was in {ckpt_path} as {prev}')

    # the data: decoded and verified on the host, then copied to the device once
    x_train, y_train, x_val, y_val = load_mnist(args.data_dir)      # (60000, 32, 32), (60000,), ...
    if args.compare_blog_loop:
        compare_loops(x_train, y_train, args.batch_size, args.lr, args.device, args.compare_blog_loop)
        return
    x_train, x_val = x_train[:, None].to(args.device), x_val[:, None].to(args.device)  # (N, 1, 32, 32)
    y_train, y_val = y_train.to(args.device), y_val.to(args.device)

    # train (Ctrl-C keeps the last completed epoch), then report on the 10,000 test images
    config = {k: v for k, v in vars(args).items() if k != 'resume'}
    t0 = time.perf_counter()
    try:
        history = train(model, x_train, y_train, x_val, y_val, args.epochs, args.batch_size,
                        args.lr, args.log_every, ckpt_path, config, resume_from)
    except KeyboardInterrupt as e:
        epoch = e.args[0] if e.args else None
        if epoch is None:
            parser.exit(130, '\ninterrupted before the first epoch ended: nothing was saved\n')
        resume = shlex.join(['python', 'train.py', *[a for a in argv if a != '--resume'], '--resume'])
        parser.exit(130, f'\ninterrupted: {ckpt_path} holds epoch {epoch} (the last completed one).\n'
                         f'Resume with: {resume}\n')
    trained = args.epochs - (resume_from['epoch'] if resume_from else 0)
    median = statistics.median(history['seconds'][-trained:])
    print(f'trained {trained} epoch{"s" * (trained != 1)} in {time.perf_counter() - t0:.0f} s on {args.device} | '
          f'median {median:.2f} s/epoch ({len(x_train) / median / 1000:.1f}k img/s)')
    _, acc = evaluate(model, x_val, y_val)
    print(f'Model accuracy: {100 * acc:.2f}%')
    plot_loss(history, Path(args.out_dir) / 'loss.png')
    print(f'wrote {ckpt_path} (classifier {classifier_id(ckpt_path)}: the name fid.py gives its numbers) '
          f'and {Path(args.out_dir) / "loss.png"}')

# -----------------------------------------------------------------------------
# plumbing: a first reading can skip the rest of this file.
# checkpoints: everything needed to evaluate the model, and to train on from it

def snapshot(model, optimizer, epoch, history, config, device):
    """The training state at the end of an epoch, on the CPU: the weights made contiguous, so they
    load anywhere; the optimizer's state in its own layout, so a resumed run computes the same."""
    evaluated = bool(history['val_epoch']) and history['val_epoch'][-1] == epoch
    return {
        'model': {k: v.contiguous() for k, v in cpu_copy(model.state_dict()).items()},
        'architecture': model.architecture(),       # the network, layer by layer (model.py)
        'optimizer': cpu_copy(optimizer.state_dict()),
        'optimizer_name': optimizer_name(optimizer),
        'rng': rng_states(device),
        'config': config, 'epoch': epoch,
        # the validation numbers of this very epoch, or None when it was not evaluated
        'val_loss': history['val_loss'][-1] if evaluated else None,
        'val_acc': history['val_acc'][-1] if evaluated else None,
        'history': {k: list(v) for k, v in history.items()},
    }

def save_checkpoint(path, state):
    """torch.save a snapshot atomically: path holds the old checkpoint or the new one, never half."""
    write_atomic(path, lambda tmp: torch.save(state, tmp))

def cpu_copy(obj):
    """A copy of a nested dict/list of tensors with every tensor on the CPU (strides kept)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to('cpu', copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj

def rng_states(device):
    """The states of the generators that draw the permutations and the dropout masks."""
    states = {'cpu': torch.get_rng_state()}
    kind = torch.device(device).type
    if kind == 'cuda':
        states['cuda'] = torch.cuda.get_rng_state(device)
    elif kind == 'mps':
        states['mps'] = torch.mps.get_rng_state()
    return states

def restore(ckpt, model, optimizer, history, device):
    """Load a snapshot into model, optimizer, the generators of rng_states and history; return its epoch."""
    model.load_state_dict(ckpt['model'])
    optimizer.load_state_dict(ckpt['optimizer'])
    torch.set_rng_state(ckpt['rng']['cpu'])
    kind = torch.device(device).type
    if kind == 'cuda' and 'cuda' in ckpt['rng']:
        torch.cuda.set_rng_state(ckpt['rng']['cuda'], device)
    elif kind == 'mps' and 'mps' in ckpt['rng']:
        torch.mps.set_rng_state(ckpt['rng']['mps'])
    history.update({k: list(v) for k, v in ckpt['history'].items()})
    return ckpt['epoch']

def optimizer_name(optimizer):
    """The optimizer and its settings, e.g. 'Adam(betas=(0.9, 0.999), ...)'; not lr, which --resume
    checks on its own, nor foreach, fused, capturable, differentiable: the implementation, not the maths."""
    settings = {k: v for k, v in optimizer.defaults.items()
                if k not in ('lr', 'foreach', 'fused', 'capturable', 'differentiable')}
    return f'{type(optimizer).__name__}({", ".join(f"{k}={v!r}" for k, v in settings.items())})'

def checkpoint_to_resume(path, args):
    """The checkpoint at path, checked to be one that this run can continue."""
    model, ckpt = load_classifier(path)  # a clear error for a missing, garbled or foreign file
    missing = [k for k in ('optimizer', 'optimizer_name', 'rng', 'epoch', 'history', 'config') if k not in ckpt]
    if missing or not isinstance(ckpt['history'], dict) or not isinstance(ckpt['config'], dict):
        raise ValueError(f'{path}: cannot be resumed: its {", ".join(missing) or "history or config"} '
                         f'{"is" if len(missing) < 2 else "are"} missing or not what train.py writes. It still '
                         f'works for evaluation; train without --resume (it is kept as classifier.prev.pt).')
    # these change what is learned, so they must match (--epochs only says where to stop)
    diff = [f'--{k.replace("_", "-")} {ckpt["config"].get(k)} there, {getattr(args, k)} now'
            for k in ('batch_size', 'lr', 'seed') if ckpt['config'].get(k) != getattr(args, k)]
    if diff:
        raise ValueError(f'--resume: {path} was trained with other settings ({"; ".join(diff)}): only '
                         f'--epochs may change; or train from scratch in another --out-dir.')
    now, then = optimizer_name(make_optimizer(model, args.lr)), ckpt['optimizer_name']
    if now != then:
        raise ValueError(f'--resume: {path} was trained with the optimizer {then}, and make_optimizer in '
                         f'train.py now makes {now}: resume with that one, or train without --resume.')
    if ckpt['epoch'] >= args.epochs:
        raise ValueError(f'--resume: {path} already holds epoch {ckpt["epoch"]}, and --epochs is '
                         f'{args.epochs}: ask for more, e.g. --epochs {ckpt["epoch"] + 50}')
    print(f'resuming {path} after epoch {ckpt["epoch"]}')
    return ckpt

if __name__ == '__main__':
    main()

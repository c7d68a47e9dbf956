"""
Networks for the tests, written out here rather than taken from model.py: the blog's own
layer list, and the edits a reader makes first. A test that sets `model.layers` to one of
them checks the mechanism (levels, features, checkpoints) on a network it knows, so it keeps
passing after model.py is edited; only tests/test_model.py's pinning tests check that
model.py still builds the blog's network.
"""

import torch
import torch.nn as nn

from model import Classifier, is_activation


def conv(c_in, c_out):
    return nn.Conv2d(c_in, c_out, 3, padding='same')

def blog(dropout=0.5):
    """The blog's layer list; levels (pooling layers) at 2, 5, 8; last conv at 6; 128 features."""
    return [conv(1, 8), nn.ReLU(), nn.MaxPool2d(2),
            conv(8, 16), nn.ReLU(), nn.MaxPool2d(2),
            conv(16, 32), nn.ReLU(), nn.AvgPool2d(4),
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(128, 10)]

def edit(name):
    """A fresh (layer list, indices of its pooling layers, index of its last convolution,
    feature size) of the blog's network ('blog') or of one of the edits in EDITS."""
    return {
        'blog': (blog(), [2, 5, 8], 6, 128),
        'wider': ([conv(1, 16), nn.ReLU(), nn.MaxPool2d(2), conv(16, 32), nn.ReLU(), nn.MaxPool2d(2),
                   conv(32, 64), nn.ReLU(), nn.AvgPool2d(4), nn.Flatten(), nn.Dropout(), nn.Linear(256, 10)],
                  [2, 5, 8], 6, 256),
        'batchnorm': ([conv(1, 8), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                       conv(8, 16), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                       conv(16, 32), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(4),
                       nn.Flatten(), nn.Dropout(), nn.Linear(128, 10)],
                      [3, 7, 11], 8, 128),
        'no dropout': ([layer for layer in blog() if not isinstance(layer, nn.Dropout)], [2, 5, 8], 6, 128),
        'extra conv': ([conv(1, 8), nn.ReLU(), nn.MaxPool2d(2), conv(8, 16), nn.ReLU(), nn.MaxPool2d(2),
                        conv(16, 32), nn.ReLU(), conv(32, 32), nn.ReLU(), nn.AvgPool2d(4),
                        nn.Flatten(), nn.Dropout(), nn.Linear(128, 10)],
                       [2, 5, 10], 8, 128),
        'global average pool, GELU': ([conv(1, 8), nn.GELU(), nn.MaxPool2d(2), conv(8, 16), nn.GELU(), nn.MaxPool2d(2),
                                       conv(16, 32), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(),
                                       nn.Linear(32, 10)],
                                      [2, 5, 8], 6, 32),
        'in-place ReLU, 5x5 kernels': ([nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                        nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(inplace=True), nn.AvgPool2d(4),
                                        nn.Flatten(), nn.Dropout(), nn.Linear(128, 10)],
                                       [2, 5, 8], 6, 128),
        'hidden linear layer': ([*blog()[:10], nn.Linear(128, 64), nn.ReLU(), nn.Dropout(), nn.Linear(64, 10)],
                                [2, 5, 8], 6, 128),
    }[name]

EDITS = ['wider', 'batchnorm', 'no dropout', 'extra conv', 'global average pool, GELU', 'in-place ReLU, 5x5 kernels',
         'hidden linear layer']

def network(name, seed=0):
    """(a Classifier whose self.layers is edit(name)'s, with weights drawn from seed, its
    pooling layers' indices, its last convolution's index, its feature size)."""
    torch.manual_seed(seed)
    layers, levels, conv, D = edit(name)
    model = Classifier()
    model.layers = nn.Sequential(*layers)
    return model, levels, conv, D

def save_model(path, model, **info):
    """A checkpoint of model as train.py writes one (its weights and its architecture), plus
    info; for tests that need a checkpoint but no training."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({'model': state, 'architecture': model.architecture(), **info}, path)

def other_network():
    """The network model.py builds, with another activation function: weights that fit it,
    but another network, as after a reader's edit of model.py."""
    model = Classifier()
    model.layers = nn.Sequential(*[nn.ReLU() if isinstance(m, nn.Tanh) else nn.Tanh() if is_activation(m) else m
                                   for m in model.layers])
    return model

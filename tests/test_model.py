"""
Tests for model.py: the blog's architecture (parameter count, layer indices, shapes), the
128-d features against an independent functional computation, and checkpoint loading.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from model import Classifier, get_device, load_classifier


def test_parameter_count_layer_by_layer():
    # a 3x3 convolution from c_in to c_out channels has c_in*c_out*9 weights and c_out biases
    convs = [(1, 8), (8, 16), (16, 32)]
    expected = sum(c_in * c_out * 3 * 3 + c_out for c_in, c_out in convs) + 128 * 10 + 10
    assert expected == 80 + 1168 + 4640 + 1290 == 7178
    model = Classifier()
    assert sum(p.numel() for p in model.parameters()) == expected
    layers = model.layers
    assert [layers[i].weight.numel() + layers[i].bias.numel() for i in (0, 3, 6, 11)] == [80, 1168, 4640, 1290]

def test_blog_layer_indices():
    layers = Classifier().layers
    assert len(layers) == 12
    assert isinstance(layers[2], nn.MaxPool2d) and isinstance(layers[5], nn.MaxPool2d)
    assert isinstance(layers[8], nn.AvgPool2d) and layers[8].kernel_size == 4
    assert isinstance(layers[6], nn.Conv2d) and (layers[6].in_channels, layers[6].out_channels) == (16, 32)
    assert isinstance(layers[10], nn.Dropout) and layers[10].p == 0.5
    assert isinstance(layers[11], nn.Linear)

def test_shapes_at_each_level():
    model = Classifier().eval()
    x = torch.rand(5, 1, 32, 32)
    assert model.layers[:3](x).shape == (5, 8, 16, 16)
    assert model.layers[:6](x).shape == (5, 16, 8, 8)
    assert model.layers[:9](x).shape == (5, 32, 2, 2)
    assert model(x).shape == (5, 10)
    assert model.features(x).shape == (5, 128)
    assert model.features(x, after_relu=True).shape == (5, 128)

def reference_features(model, x, after_relu):
    """The same features, written out with torch.nn.functional and the model's weights."""
    L = model.layers
    h = F.max_pool2d(F.relu(F.conv2d(x, L[0].weight, L[0].bias, padding=1)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, L[3].weight, L[3].bias, padding=1)), 2)
    h = F.conv2d(h, L[6].weight, L[6].bias, padding=1)
    if after_relu:
        h = F.relu(h)
    return h.reshape(len(x), 32, 2, 4, 2, 4).mean(dim=(3, 5)).reshape(len(x), 128)

@pytest.mark.parametrize('after_relu', [False, True])
def test_features_match_independent_computation(after_relu):
    torch.manual_seed(0)
    model = Classifier().eval()
    x = torch.rand(7, 1, 32, 32)
    expected = reference_features(model, x, after_relu)
    torch.testing.assert_close(model.features(x, after_relu=after_relu), expected)
    # pre-ReLU features take negative values; post-ReLU ones never do
    assert (model.features(x) < 0).any()
    assert (model.features(x, after_relu=True) >= 0).all()

def test_post_relu_features_are_the_input_of_the_linear_layer():
    model = Classifier().eval()
    x = torch.rand(4, 1, 32, 32)
    f = model.features(x, after_relu=True)
    torch.testing.assert_close(model.layers[11](f), model(x))

def test_get_device():
    assert get_device('cpu') == 'cpu'
    assert get_device('auto') in ('cuda', 'mps', 'cpu')
    with pytest.raises(ValueError, match="'gpu' is not a torch device"):
        get_device('gpu')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='sees no CUDA GPU'):
            get_device('cuda:0')

def test_load_classifier_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='run python train.py first'):
        load_classifier(tmp_path / 'missing.pt')
    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='not a checkpoint') as e:
        load_classifier(garbage)
    assert str(garbage) in str(e.value)
    # weights of another architecture: a clear message, not a state_dict traceback
    other = tmp_path / 'other.pt'
    torch.save({'model': nn.Linear(3, 2).state_dict()}, other)
    with pytest.raises(ValueError, match='do not fit model.Classifier'):
        load_classifier(other)
    no_model = tmp_path / 'no_model.pt'
    torch.save({'weights': 1}, no_model)
    with pytest.raises(ValueError, match='no "model" entry'):
        load_classifier(no_model)
    assert '\n' not in str(e.value)                                  # PyTorch's first line, not its paragraph

def test_load_classifier_checks_every_field(tmp_path):
    good = {k: v.clone() for k, v in Classifier().state_dict().items()}
    nan = {**good, 'layers.6.weight': good['layers.6.weight'].clone().fill_(float('nan'))}
    cases = [({'model': [1, 2]}, '"model" must be a dict of tensors'),
             ({'model': {**good, 'layers.0.bias': 3}}, '"model" must be a dict of tensors'),
             ({'model': nan}, r"the weights \['layers.6.weight'\] hold NaN"),
             ({'model': good, 'epoch': 'ten'}, '"epoch" must be a whole number'),
             ({'model': good, 'epoch': -1}, '"epoch" must be a whole number')]
    for i, (ckpt, message) in enumerate(cases):
        torch.save(ckpt, tmp_path / f'{i}.pt')
        with pytest.raises(ValueError, match=message) as e:
            load_classifier(tmp_path / f'{i}.pt')
        assert f'{i}.pt' in str(e.value) and '\n' not in str(e.value)
    torch.save({'model': good, 'epoch': 3}, tmp_path / 'ok.pt')
    assert load_classifier(tmp_path / 'ok.pt')[1]['epoch'] == 3

@pytest.mark.parametrize('name', ['meta', 'xpu', 'hpu'])
def test_get_device_only_what_the_scripts_run_on(name):
    with pytest.raises(ValueError, match=f'--device {name}: these scripts run on cpu, cuda or mps'):
        get_device(name)

@pytest.mark.parametrize('after_relu', [False, True])
def test_features_and_logits_in_one_pass(after_relu):
    torch.manual_seed(0)
    model = Classifier().eval()
    x = torch.rand(6, 1, 32, 32)
    f, logits = model.features_and_logits(x, after_relu)
    torch.testing.assert_close(f, reference_features(model, x, after_relu))
    torch.testing.assert_close(logits, model(x))
    # in training mode the logits go through dropout, as model(x) does
    model.train()
    torch.manual_seed(1)
    _, a = model.features_and_logits(x)
    torch.manual_seed(1)
    torch.testing.assert_close(a, model(x))

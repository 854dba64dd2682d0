"""LSNet as an ONNX graph of standard operators, built with the onnx package's helper API.

The fused eval model maps to Conv (BatchNorm folded), Relu, Sigmoid, Add, Mul, GlobalAveragePool
and Gemm; GroupNorm to InstanceNormalization over (B, G, 9*H*W) plus the per-channel affine; the
attention to MatMul, Softmax and its bias table gathered for the export's size (an initializer);
SKA to Pad, Slice, Mul and Sum (`ska_nodes`). No custom operator, so ONNX Runtime and TensorRT
both run the file. `lsnet_ref.export` writes and checks these graphs.
"""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from .lsnet import FFN, LKP, Attention, Block, LSConv, Residual, SqueezeExcite
from .modules import BatchNorm2d, Conv2d, GroupNorm, Identity, ReLU, Sequential
from .tensor import no_grad

__all__ = ["GROUPINGS", "GraphTooLarge", "MAX_BYTES", "ska_model", "to_onnx"]

# SKA's channel-to-weight-group mapping: "interleaved" is LSNet's (channel c uses group c % G);
# "blocked" (group c // (C/G), c // 8 in LSNet) is the mistake some ports make, kept to recognise it.
GROUPINGS = ("interleaved", "blocked")
MAX_BYTES = 2**31 - 2**20  # a serialised ModelProto must stay under protobuf's 2 GiB, with room for the nodes


class GraphTooLarge(ValueError):
    """The graph's initializers would not fit in one ModelProto (protobuf's 2 GiB)."""


def _float32(array):
    return np.ascontiguousarray(array, dtype=np.float32)


class _Graph:
    """The nodes and initializers of one graph; node outputs are named after the module path."""

    def __init__(self):
        self.nodes, self.initializers, self.bytes, self._names = [], [], 0, set()
        self._ints = {}  # tuple of values -> the int64 initializer holding them, shared by all nodes

    def _unique(self, name):
        unique, count = name, 1
        while unique in self._names:
            count += 1
            unique = f"{name}_{count}"
        self._names.add(unique)
        return unique

    def check_room(self, nbytes, what):
        """Raise GraphTooLarge if `nbytes` more of initializers would pass MAX_BYTES (before building them)."""
        if self.bytes + nbytes > MAX_BYTES:
            raise GraphTooLarge(f"{what} would take the ONNX file past protobuf's 2 GiB limit "
                                f"({(self.bytes + nbytes) / 2**30:.1f} GiB of weights)")

    def constant(self, array, name):
        array = np.asarray(array)
        self.check_room(array.nbytes, name)
        self.bytes += array.nbytes
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, values):
        """A 1-D int64 initializer (shapes, pads, slice bounds); in Reshape shapes 0 copies the input's
        dimension, which keeps the batch dynamic."""
        values = tuple(int(value) for value in values)
        if values not in self._ints:
            self._ints[values] = self.constant(np.array(values, np.int64), "ints_" + "_".join(map(str, values)))
        return self._ints[values]

    def node(self, op, inputs, name, outputs=1, **attributes):
        names = [self._unique(name if outputs == 1 else f"{name}.{i}") for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=names[0], **attributes))
        return names[0] if outputs == 1 else names


def ska_nodes(graph, x, w, shape, groups, kernel_size, name, grouping="interleaved"):
    """SKA (lsnet_ref.ops.ska) in Pad, Slice, Mul and Sum; returns the (B, C, H, W) output's name.

    x: (B, C, H, W); w: any (B, ...) holding (B, G, KS*KS, H, W) in that order. With LSNet's interleaved
    mapping, channel c = j * G + g (G = C/8) uses weight group g = c % G, so x reshaped to
    (B, C/G, G, 1, H, W) lines each channel up with its group in w reshaped to (B, 1, G, KS*KS, H, W)
    by broadcasting, without a gather. Each of the KS*KS taps multiplies a Slice of the zero-padded x
    by that tap's Slice of w; Sum adds the taps. "blocked" reshapes x to (B, G, C/G, ...) and w to
    (B, G, 1, ...) instead: channel c uses group c // (C/G), the mistaken mapping.
    """
    if grouping not in GROUPINGS:
        raise ValueError(f"ska_nodes: argument 'grouping' must be one of {GROUPINGS}; got {grouping!r}")
    channels, height, width = shape
    pad, per_group = kernel_size // 2, channels // groups
    x_groups, w_groups = {"interleaved": ((per_group, groups), (1, groups)),
                          "blocked": ((groups, per_group), (groups, 1))}[grouping]
    padded = graph.node("Pad", [x, graph.ints([0, 0, pad, pad, 0, 0, pad, pad])], f"{name}.pad", mode="constant")
    padded = graph.node("Reshape", [padded, graph.ints([0, *x_groups, 1, height + 2 * pad, width + 2 * pad])],
                        f"{name}.x_grouped")
    w = graph.node("Reshape", [w, graph.ints([0, *w_groups, kernel_size**2, height, width])], f"{name}.w_grouped")
    products = []
    for u in range(kernel_size):
        for v in range(kernel_size):
            tap = u * kernel_size + v
            window = graph.node("Slice", [padded, graph.ints([u, v]), graph.ints([u + height, v + width]),
                                          graph.ints([4, 5])], f"{name}.x_tap{tap}")
            weight = graph.node("Slice", [w, graph.ints([tap]), graph.ints([tap + 1]), graph.ints([3])],
                                f"{name}.w_tap{tap}")
            products.append(graph.node("Mul", [window, weight], f"{name}.tap{tap}"))
    total = graph.node("Sum", products, f"{name}.sum")
    return graph.node("Reshape", [total, graph.ints([0, channels, height, width])], name)


class _LSNetGraph:
    """Emits the nodes of each module kind of a fused LSNet; each method returns (output name, (C, H, W))."""

    def __init__(self, grouping):
        self.graph, self.grouping = _Graph(), grouping
        self.emitters = {
            Sequential: self.sequential, Conv2d: self.conv, ReLU: self.relu, Identity: self.identity,
            BatchNorm2d: self.batch_norm, GroupNorm: self.group_norm, Residual: self.residual, FFN: self.ffn,
            SqueezeExcite: self.squeeze_excite, LKP: self.lkp, LSConv: self.ls_conv, Attention: self.attention,
            Block: self.block,
        }

    def module(self, module, x, shape, name):
        emitter = self.emitters.get(type(module))
        if emitter is None:
            raise TypeError(f"to_onnx: no ONNX translation for {name} ({type(module).__name__}); "
                            "export the fused model (LSNet.fuse)")
        return emitter(module, x, shape, name)

    def sequential(self, module, x, shape, name):
        for child_name, child in module._modules.items():
            x, shape = self.module(child, x, shape, f"{name}.{child_name}" if name else child_name)
        return x, shape

    def conv(self, conv, x, shape, name):
        _, height, width = shape
        size, stride, padding = conv.kernel_size, conv.stride, conv.padding
        inputs = [x, self.graph.constant(_float32(conv.weight.numpy()), f"{name}.weight")]
        if conv.bias is not None:
            inputs.append(self.graph.constant(_float32(conv.bias.numpy()), f"{name}.bias"))
        y = self.graph.node("Conv", inputs, name, kernel_shape=[size, size], strides=[stride, stride],
                            pads=[padding] * 4, group=conv.groups)
        return y, (conv.out_channels, (height + 2 * padding - size) // stride + 1,
                   (width + 2 * padding - size) // stride + 1)

    def relu(self, module, x, shape, name):
        return self.graph.node("Relu", [x], name), shape

    def identity(self, module, x, shape, name):
        return x, shape

    def channel_affine(self, x, scale, shift, name):
        """x * scale + shift with one (scale, shift) per channel of a (B, C, H, W) input."""
        scaled = self.graph.node("Mul", [x, self.graph.constant(_float32(scale).reshape(-1, 1, 1), f"{name}.scale")],
                                 f"{name}.scaled")
        return self.graph.node("Add", [scaled, self.graph.constant(_float32(shift).reshape(-1, 1, 1),
                                                                    f"{name}.shift")], name)

    def batch_norm(self, bn, x, shape, name):
        """Eval-mode BatchNorm2d folded into one scale and shift per channel."""
        scale = bn.weight.numpy() / np.sqrt(bn.running_var.numpy() + bn.eps)
        shift = bn.bias.numpy() - bn.running_mean.numpy() * scale
        return self.channel_affine(x, scale, shift, name), shape

    def group_norm(self, norm, x, shape, name):
        """Normalise (B, G, C/G * H * W) with InstanceNormalization, then GroupNorm's per-channel affine."""
        channels, height, width = shape
        groups = norm.num_groups
        grouped = self.graph.node("Reshape", [x, self.graph.ints([0, groups, -1])], f"{name}.grouped")
        normed = self.graph.node("InstanceNormalization", [
            grouped, self.graph.constant(np.ones(groups, np.float32), f"{name}.ones"),
            self.graph.constant(np.zeros(groups, np.float32), f"{name}.zeros"),
        ], f"{name}.normalized", epsilon=float(norm.eps))
        normed = self.graph.node("Reshape", [normed, self.graph.ints([0, channels, height, width])],
                                 f"{name}.ungrouped")
        return self.channel_affine(normed, norm.weight.numpy(), norm.bias.numpy(), name), shape

    def residual(self, module, x, shape, name):
        y, _ = self.module(module.m, x, shape, f"{name}.m")
        return self.graph.node("Add", [x, y], name), shape

    def ffn(self, ffn, x, shape, name):
        hidden, hidden_shape = self.module(ffn.pw1, x, shape, f"{name}.pw1")
        hidden = self.graph.node("Relu", [hidden], f"{name}.act")
        return self.module(ffn.pw2, hidden, hidden_shape, f"{name}.pw2")

    def squeeze_excite(self, se, x, shape, name):
        pooled = self.graph.node("GlobalAveragePool", [x], f"{name}.pool")
        hidden, hidden_shape = self.conv(se.fc1, pooled, (shape[0], 1, 1), f"{name}.fc1")
        hidden = self.graph.node("Relu", [hidden], f"{name}.act")
        gate, _ = self.conv(se.fc2, hidden, hidden_shape, f"{name}.fc2")
        gate = self.graph.node("Sigmoid", [gate], f"{name}.gate")
        return self.graph.node("Mul", [x, gate], name), shape

    def lkp(self, lkp, x, shape, name):
        for layer in ("cv1", "act", "cv2", "cv3", "act", "cv4", "norm"):
            x, shape = self.module(getattr(lkp, layer), x, shape, f"{name}.{layer}")
        return x, shape

    def ls_conv(self, ls_conv, x, shape, name):
        lkp = ls_conv.lkp
        w, _ = self.lkp(lkp, x, shape, f"{name}.lkp")
        y = ska_nodes(self.graph, x, w, shape, lkp.dim // lkp.groups, lkp.sks, f"{name}.ska", self.grouping)
        y, _ = self.batch_norm(ls_conv.bn, y, shape, f"{name}.bn")
        return self.graph.node("Add", [y, x], name), shape

    def attention(self, attention, x, shape, name):
        _, height, width = shape
        heads, tokens, graph = attention.num_heads, height * width, self.graph
        table_bytes = 4 * heads * tokens * tokens
        graph.check_room(table_bytes, f"the {heads} x {tokens} x {tokens} attention-bias table of {name}")
        with no_grad():
            biases, idxs = attention._biases_for(height, width)
            table = biases.numpy()[:, idxs.numpy()]  # (heads, N, N) for this map size
        qkv, _ = self.conv(attention.qkv, x, shape, f"{name}.qkv")
        sizes = graph.ints([attention.nh_kd, attention.nh_kd, attention.dh])
        q, k, v = graph.node("Split", [qkv, sizes], f"{name}.qkv_split", outputs=3, axis=1)
        q, _ = self.conv(attention.dw, q, (attention.nh_kd, height, width), f"{name}.dw")
        heads_shape = graph.ints([0, heads, -1, tokens])
        q, k, v = (graph.node("Reshape", [t, heads_shape], f"{name}.{t_name}") for t, t_name in zip((q, k, v), "qkv"))
        q_t = graph.node("Transpose", [q], f"{name}.q_t", perm=[0, 1, 3, 2])
        logits = graph.node("MatMul", [q_t, k], f"{name}.qk")
        logits = graph.node("Mul", [logits, graph.constant(np.array(attention.scale, np.float32), f"{name}.scale")],
                            f"{name}.scaled")
        logits = graph.node("Add", [logits, graph.constant(_float32(table), f"{name}.attention_bias")],
                            f"{name}.logits")
        attn = graph.node("Softmax", [logits], f"{name}.attn", axis=-1)
        attn_t = graph.node("Transpose", [attn], f"{name}.attn_t", perm=[0, 1, 3, 2])
        out = graph.node("MatMul", [v, attn_t], f"{name}.out")
        out = graph.node("Reshape", [out, graph.ints([0, attention.dh, height, width])], f"{name}.out_map")
        return self.module(attention.proj, out, (attention.dh, height, width), f"{name}.proj")

    def block(self, block, x, shape, name):
        for part in ("mixer", "se", "ffn"):
            x, shape = self.module(getattr(block, part), x, shape, f"{name}.{part}")
        return x, shape

    def linear(self, linear, x, name, output=None):
        inputs = [x, self.graph.constant(_float32(linear.weight.numpy()), f"{name}.weight"),
                  self.graph.constant(_float32(linear.bias.numpy()), f"{name}.bias")]
        return self.graph.node("Gemm", inputs, output or name, transB=1)

    def network(self, model, x, shape, output):
        """The whole classifier; the eval-mode output (the mean of both heads when distilled) is named `output`."""
        for stage in ("patch_embed", "blocks1", "blocks2", "blocks3", "blocks4"):
            x, shape = self.module(getattr(model, stage), x, shape, stage)
        pooled = self.graph.node("GlobalAveragePool", [x], "pool")
        if model.num_classes == 0:
            return self.graph.node("Flatten", [pooled], output, axis=1), shape[0]
        features = self.graph.node("Flatten", [pooled], "features", axis=1)
        if not model.distillation:
            return self.linear(model.head, features, "head", output), model.num_classes
        logits = self.linear(model.head, features, "head")
        logits_dist = self.linear(model.head_dist, features, "head_dist")
        total = self.graph.node("Add", [logits, logits_dist], "heads_sum")
        half = self.graph.constant(np.array(0.5, np.float32), "half")
        return self.graph.node("Mul", [total, half], output), model.num_classes


def _model_proto(graph, inputs, outputs, opset, doc, properties):
    graph_proto = helper.make_graph(graph.nodes, "lsnet", inputs, outputs, graph.initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph_proto, opset_imports=opsets, producer_name="lsnet-ref", doc_string=doc,
                              ir_version=helper.find_min_ir_version_for(opsets))
    helper.set_model_props(model, properties)
    return model


def to_onnx(model, input_size, opset=17, grouping="interleaved"):
    """The ONNX ModelProto of `model` (an LSNet) in eval mode, fused on a copy.

    Input "images" (batch, in_chans, H, W) float32 with the batch dynamic and (H, W) = `input_size`
    fixed: the stage-4 attention-bias tables are gathered for that size, as `Attention` does.
    Output "logits" (batch, num_classes), the mean of both heads for distilled models, or
    "features" (batch, C4) without a head. SKA uses `grouping` (GROUPINGS; see `ska_nodes`).
    Raises GraphTooLarge when the graph would not fit in protobuf's 2 GiB.
    """
    height, width = input_size
    fused = model.fuse()
    emitter = _LSNetGraph(grouping)
    output = "logits" if model.num_classes else "features"
    with no_grad():
        _, out_features = emitter.network(fused, "images", (model.in_chans, height, width), output)
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", model.in_chans, height, width])]
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", out_features])]
    doc = ("LSNet (CVPR 2025) exported by lsnet-ref. SKA: channel c uses weight group c mod C/8 (interleaved)."
           if grouping == "interleaved" else "LSNet with the MISTAKEN SKA grouping c // 8, for checking ports.")
    properties = {"input_size": f"{height}x{width}", "ska_grouping": grouping,
                  "num_classes": str(model.num_classes), "distillation": str(model.distillation)}
    return _model_proto(emitter.graph, inputs, outputs, opset, doc, properties)


def ska_model(channels, height, width, groups, kernel_size=3, opset=17, grouping="interleaved"):
    """A model of the SKA subgraph alone: inputs x (batch, C, H, W) and w (batch, G, KS*KS, H, W), output y."""
    graph = _Graph()
    ska_nodes(graph, "x", "w", (channels, height, width), groups, kernel_size, "y", grouping)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels, height, width]),
              helper.make_tensor_value_info("w", TensorProto.FLOAT, ["batch", groups, kernel_size**2, height, width])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", channels, height, width])]
    return _model_proto(graph, inputs, outputs, opset, f"SKA, {grouping} grouping", {"ska_grouping": grouping})


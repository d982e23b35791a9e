"""Malformed and unsupported models fail at import with the right error: ModelError naming the
file, UnsupportedOpError naming op type, node and a hint; the runner and check_model likewise."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from verifier import ModelError, UnsupportedOpError, load_onnx
from verifier.network.check import check_model
from verifier.network.runtime import OnnxRunner

F = TensorProto.FLOAT


def save(tmp_path, nodes, inputs=None, outputs=None, inits=None, opset=13, name="m.onnx"):
    inputs = inputs or [helper.make_tensor_value_info("x", F, [1, 4])]
    outputs = outputs or [helper.make_tensor_value_info("y", F, None)]
    inits = [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k)
             for k, v in (inits or {}).items()]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def valid(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    return save(tmp_path, nodes, inits={"W": np.ones((4, 3))})


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.97])
def test_truncated_file_is_a_model_error_naming_the_file(tmp_path, keep):
    data = valid(tmp_path).read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ModelError, match="truncated.onnx"):
        load_onnx(bad)


def test_garbage_and_missing_files(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\xff\xfe not a model at all \x00\x01" * 10)
    with pytest.raises(ModelError, match="garbage.onnx"):
        load_onnx(bad)
    with pytest.raises(ModelError, match="absent.onnx"):
        load_onnx(tmp_path / "absent.onnx")
    with pytest.raises(ModelError, match="garbage.onnx"):
        OnnxRunner(bad)


def test_unknown_op_names_type_node_and_hint(tmp_path):
    nodes = [helper.make_node("Exp", ["x"], ["y"], name="my_exp")]
    with pytest.raises(UnsupportedOpError, match=r"Exp.*my_exp.*(?i:relaxation|supported)"):
        load_onnx(save(tmp_path, nodes))


def test_op_of_an_unknown_domain(tmp_path):
    nodes = [helper.make_node("FusedGemm", ["x"], ["y"], name="fg", domain="com.microsoft")]
    with pytest.raises(UnsupportedOpError, match="FusedGemm.*fg.*com.microsoft"):
        load_onnx(save(tmp_path, nodes))


def test_product_of_two_variables_is_unsupported(tmp_path):
    nodes = [helper.make_node("Mul", ["x", "x"], ["y"], name="square")]
    with pytest.raises(UnsupportedOpError, match="Mul.*square.*bilinear"):
        load_onnx(save(tmp_path, nodes))
    nodes = [helper.make_node("MatMul", ["x", "x"], ["y"], name="mm")]
    with pytest.raises(UnsupportedOpError, match="MatMul.*mm"):
        load_onnx(save(tmp_path, nodes))


def test_several_inputs_or_outputs(tmp_path):
    two_in = [helper.make_tensor_value_info("x", F, [1, 4]),
              helper.make_tensor_value_info("z", F, [1, 4])]
    with pytest.raises(ModelError, match="2 inputs"):
        load_onnx(save(tmp_path, [helper.make_node("Add", ["x", "z"], ["y"])], inputs=two_in))
    two_out = [helper.make_tensor_value_info("y", F, None),
               helper.make_tensor_value_info("r", F, None)]
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["x"], ["y"])]
    with pytest.raises(ModelError, match="2 outputs"):
        load_onnx(save(tmp_path, nodes, outputs=two_out))


def test_a_constant_second_output_is_allowed(tmp_path):
    outs = [helper.make_tensor_value_info("y", F, None), helper.make_tensor_value_info("k", F, None)]
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["c"], ["k"])]
    net = load_onnx(save(tmp_path, nodes, outputs=outs, inits={"c": np.ones(2)}))
    assert net.output_shape == (4,)


def test_undefined_value_and_bad_shapes(tmp_path):
    with pytest.raises(ModelError, match="ghost"):
        load_onnx(save(tmp_path, [helper.make_node("Add", ["x", "ghost"], ["y"])]))
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="bad_mm")]
    with pytest.raises(ModelError, match="m.onnx"):
        load_onnx(save(tmp_path, nodes, inits={"W": np.ones((5, 3))}))
    no_shape = [helper.make_tensor_value_info("x", F, None)]
    with pytest.raises(ModelError, match="shape"):
        load_onnx(save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], inputs=no_shape))


def test_integer_input_and_integer_cast(tmp_path):
    int_in = [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 4])]
    with pytest.raises(ModelError, match="floating"):
        load_onnx(save(tmp_path, [helper.make_node("Identity", ["x"], ["y"])], inputs=int_in))
    nodes = [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT32, name="to_int")]
    with pytest.raises(UnsupportedOpError, match="Cast.*to_int"):
        load_onnx(save(tmp_path, nodes))


def test_three_d_convolution_and_linear_resize_are_unsupported(tmp_path):
    inputs = [helper.make_tensor_value_info("x", F, [1, 1, 3, 3, 3])]
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="c3")]
    with pytest.raises(UnsupportedOpError, match="Conv.*c3"):
        load_onnx(save(tmp_path, nodes, inputs=inputs, inits={"W": np.ones((1, 1, 2, 2, 2))}))
    inputs = [helper.make_tensor_value_info("x", F, [1, 1, 2, 2])]
    nodes = [helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear", name="up")]
    with pytest.raises(UnsupportedOpError, match="Resize.*up"):
        load_onnx(save(tmp_path, nodes, inputs=inputs, inits={"s": [1, 1, 2, 2]}))


def test_check_model_reports_agreement_and_ops(tmp_path):
    report = check_model(valid(tmp_path), n_samples=10, boxes=([-1] * 4, [1] * 4))
    assert report.agrees and report.max_rel_error < 1e-6
    assert report.onnx_ops == {"MatMul": 1, "Relu": 1}
    text = report.format()
    assert "MatMul x1" in text and "Linear" in text and "OK" in text
    with pytest.raises(ValueError):
        check_model(valid(tmp_path), boxes=([1] * 4, [0] * 4))

"""The Open Inference Protocol v2 request as raylm reads it (raylm/serve/v2.py ``parse_infer``): one input,
named after the modality, BYTES of shape [N]; anything else is a 400 naming the input."""

import json

import pytest

from raylm.serve.v2 import V2Error, parse_infer


def _body(*inputs) -> bytes:
    return json.dumps({"inputs": list(inputs)}).encode()


def _text(data, shape=None, name="text"):
    return {"name": name, "datatype": "BYTES", "shape": shape or [len(data)], "data": data}


def test_one_text_input_is_read_as_its_texts():
    _, texts = parse_infer(_body(_text(["a b", "c"])), None, "text")
    assert texts == ["a b", "c"]


def test_two_inputs_of_the_same_name_are_refused_not_answered_for_the_last():
    with pytest.raises(V2Error, match=r"^inputs\[1\] \(text\): a second input named 'text'; this model takes one"):
        parse_infer(_body(_text(["a"]), _text(["b"])), None, "text")


def test_a_shape_that_does_not_count_the_elements_names_both():
    with pytest.raises(V2Error, match=r"datatype BYTES and shape \[2\] for 1 elements; .*shape \[N\].*\(\[1\] here\)"):
        parse_infer(_body(_text(["a"], shape=[2])), None, "text")


def test_a_json_number_past_pythons_digit_limit_is_a_400_without_pythons_advice():
    from fastapi import HTTPException

    from raylm.serve.http import json_body

    with pytest.raises(HTTPException) as err:
        json_body(b'{"text": ' + b"9" * 5000 + b"}", "application/json", "text")
    assert err.value.status_code == 400
    assert "more digits than JSON numbers may have" in err.value.detail and "sys." not in err.value.detail


@pytest.mark.parametrize("model_file, platform", [("model.onnx", "onnxruntime_onnx"), ("model.tflite", "tensorflow_tflite"),
                                                  ("model.safetensors", "pytorch_safetensors"),
                                                  ("model.sparse.safetensors", "pytorch_safetensors")])
def test_the_metadata_names_the_runtime_of_the_artifact_file(model_file, platform):
    from raylm.serve.v2 import model_metadata

    meta = {"model_file": model_file, "task": {"modality": "image"}, "labels": ["a", "b"]}
    assert model_metadata("int8", meta)["platform"] == platform  # a TFLite file was "pytorch_safetensors"

"""modeling: a failure to attach an adapter keeps its real cause in the message."""

import peft
import pytest
import torch

from modeling import ModelLoadError, attach_adapter


def test_adapter_out_of_memory_keeps_its_real_cause(random_adapter, monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 MiB")

    monkeypatch.setattr(peft.PeftModel, "from_pretrained", no_memory)
    with pytest.raises(ModelLoadError, match="out of GPU memory while attaching") as caught:
        attach_adapter(object(), random_adapter, "hf")
    assert "does not fit" not in str(caught.value)

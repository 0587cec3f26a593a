"""The backbones LoRA adapts; each is a :class:`lora_lab.models.protocol.Classifier`.

* :mod:`lora_lab.models.protocol` - what every backbone provides (:class:`~lora_lab.models.protocol.Classifier`)
* :mod:`lora_lab.models.gpt2` - GPT-2 in one file, pretrained-weight loading from the hub, the classifier head
* :mod:`lora_lab.models.minilm` - the offline track: all-MiniLM-L6-v2 from PyPI, mean pooling
"""

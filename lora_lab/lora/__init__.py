"""The subject, cut the way PEFT's ``tuners/lora`` is: the layer never imports the model-level code.

* :mod:`lora_lab.lora.layer` - the LoRA layer, its scaling and init, the wrapper with an exact merge, ``LinearWithLoRA``
* :mod:`lora_lab.lora.targets` - which layers are wrapped: presets, name patterns, what is never wrapped
* :mod:`lora_lab.lora.conv` - LoRA for ``nn.Conv2d``
* :mod:`lora_lab.lora.model` - wrapping a model, finding, merging and freezing its LoRA layers, counting parameters
* :mod:`lora_lab.lora.contents` - what an adapter file holds, in either format
* :mod:`lora_lab.lora.interop` - adapters to and from Hugging Face PEFT and transformers
* :mod:`lora_lab.lora.adapter_file` - save (atomic), read and verify, check the fit, load (all or nothing)
* :mod:`lora_lab.lora.mixed_batch` - many adapters on one base, each row of a batch with its own
"""
from .adapter_file import ADAPTER_FORMATS, check_adapter_fits, load_adapter, read_adapter, save_adapter
from .contents import AdapterContents, AdapterMismatchError
from .conv import (
           Conv2dLoRALayer,
           Conv2dWithLoRA,
           check_conv2d_supported,
           conv_lora_parameter_count,
           replace_conv2d_with_lora,
)
from .interop import (
           HEAD_WEIGHTS,
           HF_CONFIG,
           HF_WEIGHTS,
           PEFT_WEIGHTS,
           check_export_folder,
           export_base,
           export_merged,
           fold_head_bias,
           read_peft_adapter,
           save_peft_adapter,
)
from .layer import LORA_INITS, LinearWithLoRA, LoRALayer
from .mixed_batch import BASE, MixedAdapterModel, MultiLoRALinear, PerRowModule, serving_memory, tensor_bytes
from .model import (
           ParamCount,
           compiled_original,
           count_parameters,
           lora_layers,
           lora_parameter_count,
           lora_parameter_names,
           lora_state_dict,
           mark_only_lora_trainable,
           mark_trainable,
           merge_lora,
           replace_linear_with_lora,
           selects,
           shared_hparams,
           unmerge_lora,
)
from .targets import DEFAULT_EXCLUDE, TARGET_PRESETS

__all__ = ["LoRALayer", "LORA_INITS", "LinearWithLoRA", "TARGET_PRESETS", "DEFAULT_EXCLUDE", "compiled_original",
           "replace_linear_with_lora", "lora_layers", "merge_lora", "unmerge_lora", "mark_only_lora_trainable",
           "mark_trainable", "ParamCount", "count_parameters", "lora_parameter_count", "lora_state_dict",
           "shared_hparams", "selects", "lora_parameter_names", "AdapterContents", "AdapterMismatchError",
           "save_adapter", "load_adapter", "read_adapter", "check_adapter_fits", "ADAPTER_FORMATS",
           "save_peft_adapter", "read_peft_adapter", "export_merged", "export_base", "fold_head_bias",
           "PEFT_WEIGHTS", "HEAD_WEIGHTS", "HF_WEIGHTS", "HF_CONFIG", "check_export_folder", "Conv2dLoRALayer",
           "Conv2dWithLoRA", "replace_conv2d_with_lora", "conv_lora_parameter_count", "check_conv2d_supported",
           "BASE", "MixedAdapterModel", "MultiLoRALinear", "PerRowModule", "serving_memory", "tensor_bytes"]

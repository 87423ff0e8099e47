"""The built-in strategies and adapters, registered through the same hook plugins use."""

from sliminfer.cache.gpu_resident import GPUResidentCache
from sliminfer.cache.offload import OffloadingKVManager
from sliminfer.core.registry import Register, hookimpl
from sliminfer.models.gemma import GemmaAdapter
from sliminfer.models.llama import LlamaAdapter
from sliminfer.models.mistral import MistralAdapter
from sliminfer.models.phi3 import Phi3Adapter
from sliminfer.models.qwen import Qwen2Adapter, Qwen3Adapter
from sliminfer.strategies.attention_unit import AttentionUnitScorer
from sliminfer.strategies.dense_attention import DenseAttention
from sliminfer.strategies.fixed_schedule import FixedBudgetSchedule
from sliminfer.strategies.gemfilter import GemFilter
from sliminfer.strategies.last_token import LastTokenScorer
from sliminfer.strategies.ratio_schedule import RatioSchedule
from sliminfer.strategies.snapkv import SnapKVScorer
from sliminfer.strategies.sparse_attention.strategy import (
    FlexPrefillAttention,
    MInferenceAttention,
)
from sliminfer.strategies.token_unit import TokenUnitScorer


@hookimpl
def sliminfer_register(register: Register) -> None:
    register.scorer("token_unit", TokenUnitScorer)
    register.scorer("attention_unit", AttentionUnitScorer)
    register.scorer("snapkv", SnapKVScorer)
    register.scorer("last_token", LastTokenScorer)
    register.schedule("fixed", FixedBudgetSchedule)
    register.schedule("ratio", RatioSchedule)
    register.cache_manager("gpu", GPUResidentCache)
    register.cache_manager("offload", OffloadingKVManager)
    register.attention("dense", DenseAttention)
    register.attention("minference", MInferenceAttention)
    register.attention("flexprefill", FlexPrefillAttention)
    register.prompt_filter("gemfilter", GemFilter)
    for adapter in (LlamaAdapter, Qwen2Adapter, Qwen3Adapter, MistralAdapter, Phi3Adapter, GemmaAdapter):
        register.model_adapter(adapter)

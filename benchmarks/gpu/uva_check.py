import time, torch
host = torch.randn(512, 2, 8, 64, 128, dtype=torch.bfloat16).pin_memory()
class A:
    def __init__(s, t):
        s.t = t
        s.__cuda_array_interface__ = {"shape": tuple(t.shape), "typestr": "<V2" , "data": (t.data_ptr(), False), "version": 3, "strides": tuple(x * t.element_size() for x in t.stride())}
try:
    import numpy as np
    hv = host.view(torch.int16)
    a = A(hv); a.__cuda_array_interface__["typestr"] = "<i2"
    dev = torch.as_tensor(a, device="cuda").view(torch.bfloat16)
    print("alias", dev.device, dev.shape, dev.data_ptr() == host.data_ptr())
    idx = torch.randperm(512, device="cuda")[:30]
    g = dev.index_select(0, idx)
    ref = host.index_select(0, idx.cpu()).cuda()
    print("gather equal", torch.equal(g, ref))
    torch.cuda.synchronize()
    for n in (30, 120):
        idx = torch.randperm(512, device="cuda")[:n]
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); 
        for _ in range(10): g = dev.index_select(0, idx)
        e.record(); e.synchronize()
        ms = s.elapsed_time(e) / 10
        print(f"gather {n} blocks ({n*256/1024:.1f} MiB): {ms:.3f} ms = {n*256*1024/ms/1e6:.1f} GB/s")
    st = torch.cuda.Stream()
    big = torch.empty(30, 2, 8, 64, 128, dtype=torch.bfloat16, device="cuda")
    s.record()
    for _ in range(10): big.copy_(host[:30], non_blocking=True)
    e.record(); e.synchronize(); ms = s.elapsed_time(e)/10
    print(f"contiguous H2D 7.5 MiB: {ms:.3f} ms = {30*256*1024/ms/1e6:.1f} GB/s")
except Exception as exc:
    import traceback; traceback.print_exc()

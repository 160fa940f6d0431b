"""Eager PyTorch twins of the course's models, written the way the PyTorch and d2l tutorials write them.

Run by `bench_torch.py` in the benchmark's own environment (`make bench` creates it with PyTorch,
which neither `make test` nor the book needs): ``python torch_twins.py rnnsearch --steps 20``
prints one JSON line with the steady-state train steps per second.

The twin of chapter 04's RNNsearch: an nn.Embedding and a bidirectional nn.GRU over the padded
source (packed, as the tutorials do), s_0 = tanh(W_s h_1(backward)), then a Python loop over the
target positions with an nn.GRUCell fed [E y_{i-1}; c_i] and Bahdanau's additive score
v_a · tanh(s_{i-1} W_a + h_j U_a) (h_j U_a computed once per batch), a masked softmax, the readout
from [s_i; E y_{i-1}; c_i], cross-entropy over the real target tokens, Adam and gradient clipping
at norm 1. The sizes and shapes are the JAX benchmark's.
"""

import argparse
import json
import time

import torch
from torch import nn


class RNNsearch(nn.Module):
    def __init__(self, V_x, V_y, embed, hidden, attention):
        super().__init__()
        self.src_embed = nn.Embedding(V_x, embed, padding_idx=0)
        self.encoder = nn.GRU(embed, hidden, batch_first=True, bidirectional=True)
        self.init_proj = nn.Linear(hidden, hidden)
        self.tgt_embed = nn.Embedding(V_y, embed, padding_idx=0)
        self.W_a = nn.Linear(hidden, attention, bias=False)
        self.U_a = nn.Linear(2 * hidden, attention, bias=False)
        self.v_a = nn.Linear(attention, 1, bias=False)
        self.cell = nn.GRUCell(embed + 2 * hidden, hidden)
        self.readout = nn.Linear(hidden + embed + 2 * hidden, V_y)

    def forward(self, source, source_lengths, target_in):
        x = self.src_embed(source)
        packed = nn.utils.rnn.pack_padded_sequence(x, source_lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, h_n = self.encoder(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=source.shape[1])
        mask = torch.arange(source.shape[1])[None, :] < source_lengths[:, None]  # [B, S]
        s = torch.tanh(self.init_proj(h_n[1]))  # the backward direction's final state
        hU = self.U_a(h)  # [B, S, k]
        logits = []
        for i in range(target_in.shape[1]):
            e = self.v_a(torch.tanh(self.W_a(s)[:, None, :] + hU)).squeeze(-1)  # [B, S]
            alpha = torch.softmax(e.masked_fill(~mask, float("-inf")), dim=-1)
            c = torch.bmm(alpha[:, None, :], h).squeeze(1)  # [B, 2H]
            y = self.tgt_embed(target_in[:, i])
            s = self.cell(torch.cat([y, c], -1), s)
            logits.append(self.readout(torch.cat([s, y, c], -1)))
        return torch.stack(logits, 1)  # [B, T_y, V]


def rnnsearch_step_rate(steps: int, warmup: int = 3, seed: int = 0) -> float:
    torch.manual_seed(seed)
    V_x, V_y, B, S, T = 99, 143, 64, 51, 57  # chapter 04's longest bucket
    model = RNNsearch(V_x, V_y, embed=32, hidden=64, attention=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    source = torch.randint(3, V_x, (B, S))
    source_lengths = torch.randint(42, S + 1, (B,))
    source[torch.arange(S)[None, :] >= source_lengths[:, None]] = 0
    target_in = torch.randint(3, V_y, (B, T))
    target_out = torch.randint(3, V_y, (B, T))
    target_lengths = torch.randint(40, T + 1, (B,))
    target_out[torch.arange(T)[None, :] >= target_lengths[:, None]] = 0  # PAD: ignored

    def step():
        optimizer.zero_grad()
        logits = model(source, source_lengths, target_in)
        loss = nn.functional.cross_entropy(logits.reshape(-1, V_y), target_out.reshape(-1), ignore_index=0)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


TWINS = {"rnnsearch": rnnsearch_step_rate}

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=sorted(TWINS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="0: PyTorch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rate = TWINS[args.model](args.steps)
    print(json.dumps({"model": args.model, "steps_per_second": rate, "torch": torch.__version__,
                      "threads": torch.get_num_threads()}))

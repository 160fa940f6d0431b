"""Eager PyTorch twins of the course's headline models, written the way the PyTorch and d2l tutorials
write them.

Run by `bench_torch.py` in the benchmark's own environment (`make bench` creates it with PyTorch,
which neither `make test` nor the book needs):

    python torch_twins.py rnnsearch --steps 5 --shape 64,51,57,99,143

prints one JSON line with the steady-state train steps per second. ``--shape`` is the batch
size, the padded source width, the padded target width and the two vocabulary sizes of the JAX
batch the twin is measured against. Every twin trains with Adam and gradient clipping at norm 1,
on random tokens of those shapes with random lengths near the widths.

The twins:

* ``encdec``, chapter 01's RNN encoder-decoder (Cho et al.'s flavour): an nn.GRU over the packed
  source, c its final state, s_0 = tanh(W_s c); the decoder an nn.GRU over [E y_{i-1}; c] for the
  whole target at once (c does not depend on i, so d2l's Seq2SeqDecoder runs the decoder as one
  call), the readout from [s_i; E y_{i-1}; c].
* ``transducer``, chapter 02's RNN Transducer: a bidirectional nn.GRU over the packed source, an
  nn.GRU prediction network over BOS y_1 .. y_U, the joint network tanh(f_t W_f + g_u W_g) W_o at
  every node of the lattice, and the loss by the forward algorithm written as tutorials write it
  (Lugosch's transducer tutorial): Python loops over t and u, vectorised over the batch.
* ``rnnsearch``, chapter 04's RNNsearch: a bidirectional nn.GRU over the packed source, s_0 =
  tanh(W_s h_1(backward)), then a Python loop over the target positions with an nn.GRUCell fed
  [E y_{i-1}; c_i] and Bahdanau's additive score v_a . tanh(s_{i-1} W_a + h_j U_a) (h_j U_a once
  per batch), a masked softmax, the readout from [s_i; E y_{i-1}; c_i].
* ``local-p``, chapter 05's Luong model with local-p attention and input feeding: the same
  encoder, h_0 = tanh(W_0 h_1(backward)); a loop over t with an nn.GRUCell fed [E y_{t-1};
  h~_{t-1}], the general score, p_t = S sigmoid(v_p . tanh(W_p h_t)), a softmax over the window
  |s - p_t| <= D times exp(-(s - p_t)^2 / (2 (D/2)^2)), h~_t = tanh(W_c [c_t; h_t]), the readout
  from h~_t.
"""

import argparse
import json
import time

import torch
from torch import nn

PAD = 0


def encode(embed, gru, source, lengths):
    """Packed (bi)GRU over padded sources, as the tutorials write it: (states [B, S, m], h_n)."""
    packed = nn.utils.rnn.pack_padded_sequence(embed(source), lengths.cpu(), batch_first=True,
                                               enforce_sorted=False)
    out, h_n = gru(packed)
    states, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=source.shape[1])
    return states, h_n


class EncoderDecoder(nn.Module):
    def __init__(self, V_x, V_y, embed=64, hidden=128):
        super().__init__()
        self.src_embed = nn.Embedding(V_x, embed, padding_idx=PAD)
        self.encoder = nn.GRU(embed, hidden, batch_first=True)
        self.init_proj = nn.Linear(hidden, hidden)
        self.tgt_embed = nn.Embedding(V_y, embed, padding_idx=PAD)
        self.decoder = nn.GRU(embed + hidden, hidden, batch_first=True)
        self.readout = nn.Linear(hidden + embed + hidden, V_y)

    def forward(self, source, source_lengths, target_in):
        _, h_n = encode(self.src_embed, self.encoder, source, source_lengths)
        c = h_n[-1]  # [B, H]
        y = self.tgt_embed(target_in)  # [B, T, E]
        context = c[:, None, :].expand(-1, target_in.shape[1], -1)
        s, _ = self.decoder(torch.cat([y, context], -1), torch.tanh(self.init_proj(c))[None])
        return self.readout(torch.cat([s, y, context], -1))  # [B, T, V]


class RNNsearch(nn.Module):
    def __init__(self, V_x, V_y, embed=32, hidden=64, attention=64):
        super().__init__()
        self.src_embed = nn.Embedding(V_x, embed, padding_idx=PAD)
        self.encoder = nn.GRU(embed, hidden, batch_first=True, bidirectional=True)
        self.init_proj = nn.Linear(hidden, hidden)
        self.tgt_embed = nn.Embedding(V_y, embed, padding_idx=PAD)
        self.W_a = nn.Linear(hidden, attention, bias=False)
        self.U_a = nn.Linear(2 * hidden, attention, bias=False)
        self.v_a = nn.Linear(attention, 1, bias=False)
        self.cell = nn.GRUCell(embed + 2 * hidden, hidden)
        self.readout = nn.Linear(hidden + embed + 2 * hidden, V_y)

    def forward(self, source, source_lengths, target_in):
        h, h_n = encode(self.src_embed, self.encoder, source, source_lengths)
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
        return torch.stack(logits, 1)  # [B, T, V]


class LocalP(nn.Module):
    def __init__(self, V_x, V_y, embed=32, hidden=32, attention=32, D=10):
        super().__init__()
        n = 2 * hidden
        self.D = D
        self.src_embed = nn.Embedding(V_x, embed, padding_idx=PAD)
        self.encoder = nn.GRU(embed, hidden, batch_first=True, bidirectional=True)
        self.init_proj = nn.Linear(hidden, n)
        self.tgt_embed = nn.Embedding(V_y, embed, padding_idx=PAD)
        self.cell = nn.GRUCell(embed + n, n)
        self.W_a = nn.Linear(n, n, bias=False)  # general score h_t^T W_a hbar_s
        self.W_p = nn.Linear(n, attention, bias=False)
        self.v_p = nn.Linear(attention, 1, bias=False)
        self.W_c = nn.Linear(2 * n, n, bias=False)
        self.readout = nn.Linear(n, V_y)

    def forward(self, source, source_lengths, target_in):
        hbar, h_n = encode(self.src_embed, self.encoder, source, source_lengths)
        positions = torch.arange(source.shape[1], dtype=torch.float32)[None, :]  # [1, S]
        mask = positions < source_lengths[:, None]
        S = source_lengths.float()
        h = torch.tanh(self.init_proj(h_n[1]))
        htilde = torch.zeros_like(h)
        sigma = self.D / 2
        logits = []
        for t in range(target_in.shape[1]):
            y = self.tgt_embed(target_in[:, t])
            h = self.cell(torch.cat([y, htilde], -1), h)
            e = torch.bmm(hbar, self.W_a(h)[:, :, None]).squeeze(-1)  # [B, S]
            p = S * torch.sigmoid(self.v_p(torch.tanh(self.W_p(h))).squeeze(-1))  # [B]
            distance = positions - p[:, None]
            window = mask & (distance.abs() <= self.D)
            a = torch.softmax(e.masked_fill(~window, float("-inf")), dim=-1)
            a = torch.nan_to_num(a) * torch.exp(-distance**2 / (2 * sigma**2))
            c = torch.bmm(a[:, None, :], hbar).squeeze(1)
            htilde = torch.tanh(self.W_c(torch.cat([c, h], -1)))
            logits.append(self.readout(htilde))
        return torch.stack(logits, 1)


class Transducer(nn.Module):
    def __init__(self, V_x, V_y, embed=32, hidden=64, prediction=64, joint=64):
        super().__init__()
        self.src_embed = nn.Embedding(V_x, embed, padding_idx=PAD)
        self.encoder = nn.GRU(embed, hidden, batch_first=True, bidirectional=True)
        self.tgt_embed = nn.Embedding(V_y, embed, padding_idx=PAD)
        self.prediction = nn.GRU(embed, prediction, batch_first=True)
        self.joint_f = nn.Linear(2 * hidden, joint)
        self.joint_g = nn.Linear(prediction, joint, bias=False)
        self.joint_out = nn.Linear(joint, V_y)

    def forward(self, source, source_lengths, target_in):
        f, _ = encode(self.src_embed, self.encoder, source, source_lengths)  # [B, T, 2H]
        g, _ = self.prediction(self.tgt_embed(target_in))  # [B, U+1, P]
        z = torch.tanh(self.joint_f(f)[:, :, None, :] + self.joint_g(g)[:, None, :, :])
        return self.joint_out(z)  # [B, T, U+1, V]


def transducer_nll(logits, labels, T_lengths, U_lengths, blank=PAD):
    """-log Pr(y|x) [B] by the forward algorithm: loops over t and u, vectorised over the batch."""
    log_probs = torch.log_softmax(logits, -1)
    B, T, U1, _ = log_probs.shape
    rows = torch.arange(B)
    log_blank = log_probs[..., blank]  # [B, T, U+1]
    log_y = torch.gather(log_probs[:, :, :-1, :], 3,
                         labels[:, None, :, None].expand(-1, T, -1, 1)).squeeze(-1)  # [B, T, U]
    alpha = [[None] * U1 for _ in range(T)]
    for t in range(T):
        for u in range(U1):
            if t == 0 and u == 0:
                alpha[t][u] = torch.zeros(B)
            elif t == 0:
                alpha[t][u] = alpha[t][u - 1] + log_y[:, t, u - 1]
            elif u == 0:
                alpha[t][u] = alpha[t - 1][u] + log_blank[:, t - 1, u]
            else:
                alpha[t][u] = torch.logaddexp(alpha[t - 1][u] + log_blank[:, t - 1, u],
                                              alpha[t][u - 1] + log_y[:, t, u - 1])
    alphas = torch.stack([torch.stack(row, 1) for row in alpha], 1)  # [B, T, U+1]
    last = alphas[rows, T_lengths - 1, U_lengths] + log_blank[rows, T_lengths - 1, U_lengths]
    return -last


MODELS = {"encdec": EncoderDecoder, "rnnsearch": RNNsearch, "local-p": LocalP, "transducer": Transducer}


def random_batch(B, S, T, V_x, V_y):
    """Tokens 3.. (0 is PAD) with lengths in the top fifth of each width, PAD after."""
    def padded(width, vocab, shortest):
        tokens = torch.randint(3, vocab, (B, width))
        lengths = torch.randint(shortest, width + 1, (B,))
        tokens[torch.arange(width)[None, :] >= lengths[:, None]] = PAD
        return tokens, lengths

    source, source_lengths = padded(S, V_x, max(1, S - S // 5))
    target_out, target_lengths = padded(T, V_y, max(1, T - T // 5))
    target_in = torch.cat([torch.ones(B, 1, dtype=torch.long), target_out[:, :-1]], 1)  # BOS first
    return source, source_lengths, target_in, target_out, target_lengths


def step_rate(name: str, shape, steps: int, warmup: int = 2, seed: int = 0) -> float:
    torch.manual_seed(seed)
    B, S, T, V_x, V_y = shape
    model = MODELS[name](V_x, V_y)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    source, source_lengths, target_in, target_out, target_lengths = random_batch(B, S, T, V_x, V_y)

    def loss():
        if name == "transducer":  # labels y_1 .. y_U, U_b = target length - 1 (no EOS)
            logits = model(source, source_lengths, target_in)
            labels = target_in[:, 1:]
            nll = transducer_nll(logits, labels, source_lengths, target_lengths - 1)
            return nll.sum() / target_lengths.sum()
        logits = model(source, source_lengths, target_in)
        return nn.functional.cross_entropy(logits.reshape(-1, V_y), target_out.reshape(-1),
                                           ignore_index=PAD)

    def step():
        optimizer.zero_grad()
        value = loss()
        value.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return value.item()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--shape", required=True, help="B,S,T,V_x,V_y of the JAX batch")
    parser.add_argument("--threads", type=int, default=0, help="0: PyTorch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = tuple(int(x) for x in args.shape.split(","))
    rate = step_rate(args.model, shape, args.steps)
    print(json.dumps({"model": args.model, "steps_per_second": rate, "torch": torch.__version__,
                      "threads": torch.get_num_threads()}))

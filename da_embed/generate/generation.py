"""Generation steered by candidate continuations assimilated as pseudo-observations.

At generation time no true next tokens exist, so the observations are scores
(DESIGN.md section 2, observations of the second kind).  Every ``I`` tokens
(one *cycle*, ``every``):

1. *forecast*: the filter's state moves with the random-walk forecast
   (process noise ``Q`` per cycle; ensemble filters and the UKF only);
2. *candidates*: one batch of ``1 + M * K`` rows decodes ``L``
   (``candidate_length``) tokens from the KV cache of the text so far: row 0
   under the filter's current mean, then K candidates of each member state
   (ensemble member, sigma point, or perturbed state of the verification
   rule), member-major, each row under its own state
   (:func:`~da_embed.generate.batch.decode_rows`; which placements share the
   prefix's cache and which need a batched per-row prefix pass:
   :mod:`~da_embed.generate.batch`);
3. *verification*: a verifier scores the M * K candidates (``self``: their
   mean log-probability under the frozen base model, one batched pass on the
   context's cache; ``judge``: the same under another causal LM; or any
   Python callable ``text -> float``);
4. *analysis*: the M x K score matrix is the predicted observation ``H(X)``
   of the members and the filter's analysis moves the state towards members
   whose candidates scored high (below);
5. *commit*: the cycle's first L tokens are a candidate already decoded,
   so no token is decoded twice: with ``commit="mean"`` (default) row 0's,
   the continuation of the filter's mean; with ``commit="best"`` the
   best-scored member candidate (best-of-M*K; an exact tie takes the first);
   the remaining I - L tokens are decoded by the new analysis mean alone.

``commit="mean"`` is the default because the text is then the filter's: the
state alone moved it, and what the filter learns in cycle c acts from the
remaining I - L tokens of cycle c on.  ``"best"`` adds best-of-N selection
under the verifier on top, which an evaluation must not credit to the
filter.

The pseudo-observation (EnKF, ETKF, UKF)
----------------------------------------
Candidate k of every member is decoded with the same uniform random numbers
(common random numbers), so column k of the score matrix is a function of
the state alone for this cycle: ``h_k(s) = score(candidate_k(s))`` is an
observation operator with m = K components.

* target ``"best"`` (default): ``y_k = max_j h_k(x_j)``, the best score that
  any member reached with the same random numbers.  A number ``c`` instead
  means ``y_k = hbar_k + c sqrt(r)``, c standard deviations above the
  filter's predicted score ``hbar_k`` (ensemble mean, or weighted
  sigma-point mean).
* ``R = r I`` with ``r = "auto"`` (default): the variance of all M * K
  scores of the cycle, i.e. a candidate's score is trusted as much as the
  scores vary among the candidates.  With ``"auto"`` the whole update is
  invariant to an affine change of the verifier's scale (``a * score + b``,
  a > 0), so a callable verifier needs no tuning; a number fixes r (in
  squared score units).
* A candidate whose verifier raised or returned a non-finite value drops
  its column k (``y_k`` missing, the filters skip it) and is counted; a
  cycle with no usable column, or with all scores equal (r = 0), keeps the
  forecast.

The verification rule (the seeds')
----------------------------------
``s <- s + delta_s + eta * mean_j(z_j h_j)``: M perturbed states
``s + sigma h_j`` (``h_j ~ N(0, I)``, antithetic pairs) each propose K
candidates; ``z_j`` is member j's mean score standardised over the members
(zero mean, unit variance: scale-free, like evolution strategies' fitness
shaping); ``delta_s``, the low-rank adapter's output, is 0 without learned
dynamics (:func:`~da_embed.generate.verification_update`).  Defaults ``sigma = sqrt(P0)``,
``eta = sigma``.

Decoding
--------
Sampling is inverse-CDF sampling: the token is the first index whose
cumulative probability (vocabulary order, after temperature and top-p)
exceeds a uniform number ``u``.  The output stream's uniforms are the draws
of ``numpy.random.default_rng(SeedSequence(seed).spawn(3)[0])``, in order, one
per token, whatever the filter, so runs with the same seed differ only
through their states; the candidates' uniforms come from ``spawn(3)[1]`` and
the filter's randomness from ``spawn(3)[2]``.  Greedy decoding takes the
first maximum (as ``transformers``' ``generate``).  Generation does not stop
at an end-of-text token: every run produces ``max_new_tokens`` tokens.
With ``filter="none"`` the result is the base model's own generation.

Shapes: M members (or sigma points), K candidates per member, I tokens per
cycle, L tokens per candidate, n state size, C cycles, V vocabulary.
"""

from __future__ import annotations

from .config import EVERY, GenerationConfig
from .cycles import CycleLoop
from .log import GenerationLog, run_attrs, static_variables
from .preparation import prepare_run
from .result import GenerationResult

__all__ = ["generate"]


def generate(model, tokenizer, prompt: str, *, filter: str = "etkf", placement="hidden",
             subspace: str | None = None, candidates: int = 1, every: int = EVERY,
             candidate_length: int | None = None, commit: str = "mean", max_new_tokens: int = 64, verifier="self", judge_model=None, members: int = 8,
             sample: bool = True, temperature: float = 1.0, top_p: float = 1.0,
             P0: float = 0.01, Q: float = 0.001, R="auto", target="best",
             inflation: float | None = None, eta: float | None = None,
             sigma: float | None = None, seed: int = 0, out=None,
             progress: bool = True) -> GenerationResult:
    """Generate text whose scale state is updated by scored candidate continuations.

    Parameters
    ----------
    model : transformers causal LM
        Frozen; a placement is attached for the run and removed after.
    tokenizer : transformers tokenizer of ``model``
    prompt : str
        Non-empty.
    filter, placement, subspace, candidates, every, candidate_length, commit : optional
        The filter (:data:`~da_embed.generate.FILTERS`), where the state acts,
        an optional ``"random:k"`` subspace, K candidates per member, I tokens
        per cycle, L tokens per candidate (default ``min(CANDIDATE_LENGTH, every)``), and
        which candidate is committed (``"mean"`` or ``"best"``).
    max_new_tokens : int, optional
        The tokens to generate.
    verifier, judge_model, members, sample, temperature, top_p : optional
        What scores the candidates, the members M, and the decoding.
    P0, Q, R, target, inflation, eta, sigma, seed, out, progress : optional
        The filter's prior, process noise and pseudo-observation, the
        verification rule's step and perturbation, the seed, a netCDF log
        appended cycle by cycle, and a progress bar.  Each setting, its
        default and its range: :class:`~da_embed.generate.config.GenerationConfig`.

    Returns
    -------
    GenerationResult

    Raises
    ------
    ValueError
        For an empty prompt, ``candidates < 1``, an unknown filter, and any
        other bad setting, before any work.

    Examples
    --------
    >>> from da_embed.reference import train_tokenizer
    >>> from da_embed.testing import tiny_gpt2
    >>> tok = train_tokenizer("the cat sat on the mat. " * 30, vocab_size=300)
    >>> res = generate(tiny_gpt2(vocab_size=len(tok)), tok, "the cat", filter="etkf", members=4,
    ...                candidates=2, every=4, max_new_tokens=8, progress=False)
    >>> res.token_ids.size, res.states.shape, res.scores.shape  # 2 cycles, n = 32, M x K
    (8, (2, 32), (2, 4, 2))
    """
    cfg = GenerationConfig(
        filter=filter, placement=placement, subspace=subspace, candidates=candidates,
        every=every, candidate_length=candidate_length, commit=commit,
        max_new_tokens=max_new_tokens, verifier=verifier, judge_model=judge_model,
        members=members, sample=sample, temperature=temperature, top_p=top_p, P0=P0, Q=Q, R=R,
        target=target, inflation=inflation, eta=eta, sigma=sigma, seed=seed, out=out,
        progress=progress).checked(prompt)
    setup = prepare_run(model, tokenizer, prompt, cfg)  # warns naming the caller of generate()
    loop = CycleLoop(model, tokenizer, cfg, setup)
    params = {} if loop.flt is None else loop.flt.params()
    log = GenerationLog(cfg.out, loop.log_sizes(), run_attrs(model, prompt, cfg, setup, params),
                        static_variables(setup.placement))
    loop.run(log)
    return loop.result(prompt, log)

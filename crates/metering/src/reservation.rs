//! A reservation: the worst-case cost of one request, held against the key's `max_spend` and the
//! account's balance until settled. Dropping it unsettled releases it, so an early return or a
//! panic never leaks reserved money.
//!
//! Settling is where promise 3 meets the upstream's word: the usage an upstream reports is
//! bounded by what the request could have used (prompt: the larger of the estimate and the
//! model's context window; output: the limit sent upstream × the choices asked for), and the bill
//! never exceeds what was reserved. A report beyond those bounds is an upstream fault, billed at
//! the reservation and flagged ([`UsageFault`]), so the cap holds even against a lying upstream.

use std::cell::Cell;
use std::sync::Arc;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use router_one_core::error::{REFUSED_BY_BALANCE, REFUSED_BY_BUDGET};
use router_one_core::{ApiError, ErrorKind, PostedRates, TokenUsage, Usd};

use crate::budget::Exhausted;
use crate::index::KeyState;
use crate::rate::OutputAsk;

/// What a request asks to hold: its prompt and its output, at the model's posted rates.
#[derive(Debug, Clone, Copy)]
pub struct CostAsk {
    /// The model's rates.
    pub rates: PostedRates,
    /// An upper bound of the prompt's tokens.
    pub prompt_tokens: u64,
    /// The output per choice: exactly the client's `max_tokens`, or up to a default that fits.
    pub output: OutputAsk,
    /// How many choices the upstream generates (`n`), each up to the output.
    pub choices: u64,
    /// The most prompt tokens the upstream can truly count (the model's context window); a
    /// report above both this and `prompt_tokens` is impossible.
    pub context_window: u64,
}

impl CostAsk {
    /// The most this request can cost: its prompt and its largest output (`None`: past any
    /// storable amount, which admission refuses anyway).
    pub fn worst_case(&self) -> Option<Usd> {
        worst_case(self, self.output.most())
    }
}

/// Money held for one request in flight.
#[derive(Debug)]
pub struct Reservation {
    key: Arc<KeyState>,
    amount: Usd,
    ask: CostAsk,
    output_tokens: u64,
    settled: bool,
}

/// Why a settlement did not take the upstream's report at its word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageFault {
    /// A count the request cannot have produced (beyond its bounds, or a cost past any storable
    /// amount): the bill is the reservation.
    Implausible,
    /// Believable counts that cost more than the worst case reserved (the prompt estimate was
    /// below the upstream's count): the bill is the reservation, the rest is the operator's.
    OverReservation,
}

impl UsageFault {
    /// The error code the usage record carries, for the operator.
    pub fn code(self) -> &'static str {
        match self {
            UsageFault::Implausible => "upstream_usage_implausible",
            UsageFault::OverReservation => "upstream_usage_over_reservation",
        }
    }
}

/// What a request is billed, after checking the upstream's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// The usage to record: the report, each count within what the request could have used.
    pub usage: TokenUsage,
    /// What the request costs: the usage at the posted rates, never more than was reserved.
    pub cost: Usd,
    /// Set when the report could not be billed as it was.
    pub fault: Option<UsageFault>,
}

impl Reservation {
    /// Reserves the request's worst case against the key's budget, then the account's. An
    /// output of `UpTo` is clamped to what both can pay for (and refused below its `min`);
    /// [`Reservation::output_tokens`] says what the reservation covers, per choice.
    pub fn new(key: Arc<KeyState>, ask: CostAsk, now_us: i64) -> Result<Reservation, ApiError> {
        Reservation::reserve(key, ask, now_us).map_err(|refused| refused.error)
    }

    /// Reserves an exact output (a client's `max_tokens`) or, when what is left on the key or
    /// its account cannot cover it, the most output from `min` up that it can cover: the
    /// reservation's [`Reservation::output_tokens`] then says how far it was clamped. A request
    /// that would fit once requests in flight finish is still the transient refusal (not
    /// clamped: it waits), and one that not even `min` fits is refused as before.
    pub fn new_or_smaller(key: Arc<KeyState>, ask: CostAsk, min: u64, now_us: i64) -> Result<Reservation, ApiError> {
        let OutputAsk::Exactly(max) = ask.output else {
            return Reservation::new(key, ask, now_us);
        };
        match Reservation::reserve(key.clone(), ask, now_us) {
            Ok(reservation) => Ok(reservation),
            Err(refused) if refused.held => Err(refused.error),
            Err(_) => {
                let smaller = CostAsk {
                    output: OutputAsk::UpTo { max, min: min.min(max) },
                    ..ask
                };
                Reservation::new(key, smaller, now_us)
            }
        }
    }

    fn reserve(key: Arc<KeyState>, ask: CostAsk, now_us: i64) -> Result<Reservation, Refused> {
        let fitted = Cell::new(0u64);
        let fit = |output: OutputAsk| {
            let fitted = &fitted;
            move |available: Option<Usd>| {
                let (tokens, amount) = fit(&ask, output, available)?;
                fitted.set(tokens);
                Some(amount)
            }
        };
        let on_key = key
            .spend
            .reserve_fit(now_us, fit(ask.output))
            .map_err(|e| key_refusal(&ask, e, now_us))?;
        let key_tokens = fitted.get();
        let narrowed = match ask.output {
            OutputAsk::Exactly(n) => OutputAsk::Exactly(n),
            OutputAsk::UpTo { min, .. } => OutputAsk::UpTo { max: key_tokens, min },
        };
        let on_account = match key.account.reserve_fit(now_us, fit(narrowed)) {
            Ok(amount) => amount,
            Err(e) => {
                key.spend.settle(on_key, Usd::ZERO);
                return Err(account_refusal(&ask, e));
            }
        };
        // The account may have clamped further: the key gives back the difference.
        key.spend.settle(on_key.saturating_sub(on_account), Usd::ZERO);
        Ok(Reservation {
            key,
            amount: on_account,
            ask,
            output_tokens: fitted.get(),
            settled: false,
        })
    }

    /// The output tokens per choice this reservation pays for.
    pub fn output_tokens(&self) -> u64 {
        self.output_tokens
    }

    /// The most tokens the request can carry: its prompt bound and its output for every choice
    /// (what an upstream key's tokens-per-minute is counted on).
    pub fn worst_tokens(&self) -> u64 {
        self.ask
            .prompt_tokens
            .saturating_add(self.output_tokens.saturating_mul(self.ask.choices))
    }

    /// What is held.
    pub fn amount(&self) -> Usd {
        self.amount
    }

    /// Ends the reservation with the usage the upstream reported: bounded, priced, and billed
    /// at most the amount reserved (see the module doc).
    pub fn settle(mut self, reported: TokenUsage) -> Settlement {
        let settlement = self.check(reported);
        self.finish(settlement.cost);
        settlement
    }

    fn check(&self, reported: TokenUsage) -> Settlement {
        let prompt = reported
            .prompt_tokens
            .min(self.ask.prompt_tokens.max(self.ask.context_window));
        let completion = reported
            .completion_tokens
            .min(self.output_tokens.saturating_mul(self.ask.choices));
        let usage = TokenUsage {
            prompt_tokens: prompt,
            cached_tokens: reported.cached_tokens.min(prompt),
            cache_write_tokens: reported
                .cache_write_tokens
                .min(prompt - reported.cached_tokens.min(prompt)),
            completion_tokens: completion,
            reasoning_tokens: reported.reasoning_tokens.min(completion),
        };
        let (cost, fault) = match self.ask.rates.cost(&usage) {
            _ if usage != reported => (self.amount, Some(UsageFault::Implausible)),
            None => (self.amount, Some(UsageFault::Implausible)),
            Some(cost) if cost > self.amount => (self.amount, Some(UsageFault::OverReservation)),
            Some(cost) => (cost, None),
        };
        Settlement { usage, cost, fault }
    }

    fn finish(&mut self, actual: Usd) {
        if !self.settled {
            self.settled = true;
            self.key.spend.settle(self.amount, actual);
            self.key.account.settle(self.amount, actual);
        }
    }
}

/// The most output tokens per choice (within the ask) whose worst case fits in `available`, and
/// that cost.
fn fit(ask: &CostAsk, output: OutputAsk, available: Option<Usd>) -> Option<(u64, Usd)> {
    let cost = |tokens: u64| worst_case(ask, tokens);
    let (max, min) = match output {
        OutputAsk::Exactly(n) => (n, n),
        OutputAsk::UpTo { max, min } => (max, min.min(max)),
    };
    let Some(available) = available else {
        return Some((max, cost(max)?));
    };
    let prompt_cost = cost(0)?;
    if prompt_cost > available {
        return None;
    }
    let per_token = ask.rates.output_per_mtok * Decimal::from(ask.choices) / Decimal::from(1_000_000);
    let mut tokens = if per_token.is_zero() {
        max
    } else {
        ((available.saturating_sub(prompt_cost).to_decimal()) / per_token)
            .floor()
            .to_u64()
            .unwrap_or(max)
            .min(max)
    };
    // Rounding to 10⁻¹⁰ USD can put the estimate one token over; step down until it fits.
    while tokens >= min {
        let amount = cost(tokens)?;
        if amount <= available {
            return Some((tokens, amount));
        }
        tokens = tokens.checked_sub(1)?;
    }
    None
}

/// The most the prompt and `output` tokens per choice can cost (`None`: past any storable amount).
fn worst_case(ask: &CostAsk, output: u64) -> Option<Usd> {
    ask.rates
        .worst_case(ask.prompt_tokens, output.checked_mul(ask.choices)?)
}

/// Why a reservation was refused.
struct Refused {
    error: ApiError,
    /// Only because of what requests in flight hold: the ask fits once they finish.
    held: bool,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Refused {
        Refused { error, held: false }
    }
}

/// A request that what is held by requests in flight keeps out, but that would fit once they
/// finish: transient (429 with `Retry-After`), never a used-up budget — relays disable a channel
/// on a 402, so one must mean "used up for good".
fn held_refusal(ask: &CostAsk, e: Exhausted, whose: &str, reason: &'static str) -> Option<Refused> {
    let free_later = e.available.checked_add(e.held)?;
    fit(ask, ask.output, Some(free_later))?;
    Some(Refused {
        error: ApiError::new(
            ErrorKind::RateLimited,
            format!(
                "Requests already in flight hold what {whose} can spend (${} is held, the request needs {}); \
                 retry when they finish.",
                e.held,
                needs(ask)
            ),
        )
        .with_retry_after(HELD_RETRY_AFTER_S)
        .refused_by(reason),
        held: true,
    })
}

/// `Retry-After` of a request refused only because of what requests in flight hold: most
/// finish within seconds.
const HELD_RETRY_AFTER_S: u64 = 1;

fn key_refusal(ask: &CostAsk, e: Exhausted, now_us: i64) -> Refused {
    if let Some(refusal) = held_refusal(ask, e, "this API key", REFUSED_BY_BUDGET) {
        return refusal;
    }
    let error = match e.resets_at_us {
        // A periodic budget comes back: transient, like a rate limit (relays retry, and must not
        // read money words and disable the channel).
        Some(at) => {
            let seconds = u64::try_from(at.saturating_sub(now_us))
                .unwrap_or(0)
                .div_ceil(1_000_000);
            ApiError::new(
                ErrorKind::RateLimited,
                format!(
                    "This API key's budget for the current period is used up (${} left, the request needs {}); \
                     it starts again in {seconds} s.",
                    e.available,
                    needs(ask)
                ),
            )
            .with_retry_after(seconds)
        }
        None => ApiError::new(
            ErrorKind::InsufficientQuota,
            format!(
                "This API key's spending limit is used up: ${} is left and the request needs {}. \
                 Raise the key's max_spend or lower max_tokens.",
                e.available,
                needs(ask)
            ),
        ),
    };
    error.refused_by(REFUSED_BY_BUDGET).into()
}

fn account_refusal(ask: &CostAsk, e: Exhausted) -> Refused {
    if let Some(refusal) = held_refusal(ask, e, "this account", REFUSED_BY_BALANCE) {
        return refusal;
    }
    ApiError::new(
        ErrorKind::InsufficientQuota,
        format!(
            "Your prepaid balance cannot cover this request: ${} is available and the request needs {}. \
             Top up or lower max_tokens.",
            e.available,
            needs(ask)
        ),
    )
    .refused_by(REFUSED_BY_BALANCE)
    .into()
}

/// What the request needed at least, for error messages.
fn needs(ask: &CostAsk) -> String {
    let (tokens, what) = match ask.output {
        OutputAsk::Exactly(n) => (n, "up to"),
        OutputAsk::UpTo { max, min } => (min.min(max), "at least"),
    };
    match worst_case(ask, tokens) {
        Some(cost) => format!("{what} ${cost}"),
        None => "more than can be stored".to_owned(),
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.finish(Usd::ZERO);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::index::KeyIndex;
    use router_one_core::store::{ApiKey, BudgetPeriod, KeySettings};

    /// Input free, output $10 per 1M tokens: one output token = 100,000 units of 10⁻¹⁰ USD.
    fn rates() -> PostedRates {
        PostedRates {
            input_per_mtok: Decimal::ZERO,
            cached_input_per_mtok: Decimal::ZERO,
            cache_write_per_mtok: Decimal::ZERO,
            output_per_mtok: Decimal::from(10),
        }
    }

    const TOKEN: i64 = 100_000;

    fn key_with(balance: i64, max_spend: Option<i64>, period: BudgetPeriod) -> Arc<KeyState> {
        let index = KeyIndex::default();
        let key = ApiKey {
            id: "key_1".into(),
            account_id: "acct_1".into(),
            secret_hash: "h".into(),
            hint: String::new(),
            settings: KeySettings {
                max_spend: max_spend.map(Usd::from_units),
                budget_period: period,
                ..Default::default()
            },
            created_at_us: 0,
            revoked_at_us: None,
            spend: Usd::ZERO,
        };
        index.insert(&key, Usd::from_units(balance), 0, Usd::ZERO, 0)
    }

    fn ask(output: OutputAsk) -> CostAsk {
        CostAsk {
            rates: rates(),
            prompt_tokens: 0,
            output,
            choices: 1,
            context_window: 1_000_000,
        }
    }

    fn output_tokens(n: u64) -> TokenUsage {
        TokenUsage {
            completion_tokens: n,
            ..TokenUsage::default()
        }
    }

    #[test]
    fn drop_releases_and_settle_spends() {
        let key = key_with(100 * TOKEN, None, BudgetPeriod::None);
        drop(Reservation::new(key.clone(), ask(OutputAsk::Exactly(60)), 0).unwrap());
        assert_eq!(key.account.available(), Some(Usd::from_units(100 * TOKEN)));
        Reservation::new(key.clone(), ask(OutputAsk::Exactly(60)), 0)
            .unwrap()
            .settle(output_tokens(10));
        assert_eq!(key.account.available(), Some(Usd::from_units(90 * TOKEN)));
    }

    #[test]
    fn refused_by_key_or_account_and_leaks_nothing() {
        let key = key_with(100 * TOKEN, Some(50 * TOKEN), BudgetPeriod::None);
        let e = Reservation::new(key.clone(), ask(OutputAsk::Exactly(60)), 0).unwrap_err();
        assert_eq!((e.kind, e.retry_after_s), (ErrorKind::InsufficientQuota, None));
        // The same code to the client; the operator's metrics tell the two apart.
        assert_eq!(e.refusal, Some(REFUSED_BY_BUDGET));
        let key = key_with(40 * TOKEN, Some(50 * TOKEN), BudgetPeriod::None);
        let e = Reservation::new(key.clone(), ask(OutputAsk::Exactly(45)), 0).unwrap_err();
        assert!(e.message.contains("prepaid balance"), "{}", e.message);
        assert_eq!(
            (e.kind, e.refusal),
            (ErrorKind::InsufficientQuota, Some(REFUSED_BY_BALANCE))
        );
        assert_eq!(key.spend.reserved(), Usd::ZERO);
        assert_eq!(key.account.reserved(), Usd::ZERO);
    }

    #[test]
    fn an_unbounded_output_is_clamped_to_what_both_budgets_can_pay() {
        let key = key_with(1_000 * TOKEN, Some(30 * TOKEN), BudgetPeriod::None);
        let r = Reservation::new(key.clone(), ask(OutputAsk::UpTo { max: 128_000, min: 16 }), 0).unwrap();
        assert_eq!(r.output_tokens(), 30);
        assert_eq!(key.spend.available(), Some(Usd::ZERO));
        drop(r);
        // The account is the tighter one: the key gives back what the account could not cover.
        let key = key_with(20 * TOKEN + 5, Some(30 * TOKEN), BudgetPeriod::None);
        let r = Reservation::new(key.clone(), ask(OutputAsk::UpTo { max: 128_000, min: 16 }), 0).unwrap();
        assert_eq!(r.output_tokens(), 20);
        assert_eq!(key.spend.reserved(), Usd::from_units(20 * TOKEN));
        assert_eq!(key.account.available(), Some(Usd::from_units(5)));
        // Not even the minimal answer, but the first request holds enough: retry later.
        let e = Reservation::new(key.clone(), ask(OutputAsk::UpTo { max: 128_000, min: 16 }), 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert_eq!(key.spend.reserved(), Usd::from_units(20 * TOKEN));
        // Once it spent what it held, not even the minimal answer fits: refused, nothing held.
        r.settle(output_tokens(20));
        let e = Reservation::new(key.clone(), ask(OutputAsk::UpTo { max: 128_000, min: 16 }), 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InsufficientQuota);
        assert_eq!(key.spend.reserved(), Usd::ZERO);
    }

    #[test]
    fn an_exact_output_that_cannot_be_covered_is_clamped_to_what_can() {
        // 30 tokens left on the key: 60 is clamped to 30, the rest stays free.
        let key = key_with(1_000 * TOKEN, Some(30 * TOKEN), BudgetPeriod::None);
        let r = Reservation::new_or_smaller(key.clone(), ask(OutputAsk::Exactly(60)), 16, 0).unwrap();
        assert_eq!((r.output_tokens(), r.amount()), (30, Usd::from_units(30 * TOKEN)));
        drop(r);
        // One that fits is reserved as asked.
        let r = Reservation::new_or_smaller(key.clone(), ask(OutputAsk::Exactly(20)), 16, 0).unwrap();
        assert_eq!(r.output_tokens(), 20);
        // Held by a request in flight, and fitting once it finishes: wait (429), not clamped.
        let e = Reservation::new_or_smaller(key.clone(), ask(OutputAsk::Exactly(25)), 16, 0).unwrap_err();
        assert_eq!((e.kind, e.retry_after_s), (ErrorKind::RateLimited, Some(1)));
        r.settle(output_tokens(20));
        // 10 tokens left, fewer than the minimal answer: used up for good, the 402.
        let e = Reservation::new_or_smaller(key.clone(), ask(OutputAsk::Exactly(60)), 16, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InsufficientQuota);
        assert_eq!((key.spend.reserved(), key.account.reserved()), (Usd::ZERO, Usd::ZERO));
        // The account is the tighter one.
        let key = key_with(40 * TOKEN, None, BudgetPeriod::None);
        let r = Reservation::new_or_smaller(key.clone(), ask(OutputAsk::Exactly(4_096)), 16, 0).unwrap();
        assert_eq!(r.output_tokens(), 40);
    }

    #[test]
    fn a_periodic_budget_too_small_for_max_tokens_is_clamped_not_a_wait_until_the_reset() {
        let now = 20_000 * 86_400_000_000; // midnight UTC: the budget resets in a day
        let key = key_with(1_000 * TOKEN, Some(50 * TOKEN), BudgetPeriod::Daily);
        let r = Reservation::new_or_smaller(key, ask(OutputAsk::Exactly(4_096)), 16, now).unwrap();
        assert_eq!(r.output_tokens(), 50);
    }

    #[test]
    fn a_used_up_periodic_budget_is_a_transient_429() {
        let now = 20_000 * 86_400_000_000 + 86_000_000_000; // 400 s before midnight UTC
        let key = key_with(1_000 * TOKEN, Some(10 * TOKEN), BudgetPeriod::Daily);
        let e = Reservation::new(key, ask(OutputAsk::Exactly(11)), now).unwrap_err();
        assert_eq!((e.kind, e.retry_after_s), (ErrorKind::RateLimited, Some(400)));
        assert_eq!(e.refusal, Some(REFUSED_BY_BUDGET));
        assert!(
            !e.message.contains("credit") && !e.message.contains("balance"),
            "{}",
            e.message
        );
    }

    #[test]
    fn clamping_rounds_down_never_over() {
        // $0.075 per 1M output tokens: a token is 750 units; prompt of 7 tokens at $0.15.
        let rates = PostedRates {
            input_per_mtok: "0.15".parse().unwrap(),
            cached_input_per_mtok: "0.15".parse().unwrap(),
            cache_write_per_mtok: "0.15".parse().unwrap(),
            output_per_mtok: "0.075".parse().unwrap(),
        };
        for available in [0i64, 1, 749, 10_500, 10_501, 11_249, 11_250, 1_000_000] {
            let ask = CostAsk {
                rates,
                prompt_tokens: 7,
                output: OutputAsk::UpTo { max: 1_000, min: 0 },
                choices: 1,
                context_window: 1_000,
            };
            match fit(&ask, ask.output, Some(Usd::from_units(available))) {
                Some((tokens, amount)) => {
                    assert!(amount.units() <= available);
                    assert_eq!(amount, rates.worst_case(7, tokens).unwrap());
                    if tokens < 1_000 {
                        assert!(rates.worst_case(7, tokens + 1).unwrap().units() > available);
                    }
                }
                None => assert!(rates.worst_case(7, 0).unwrap().units() > available),
            }
        }
    }

    #[test]
    fn every_choice_is_reserved() {
        // n = 2 at 60 tokens each needs 120 tokens' worth: a 100-token key refuses it.
        let key = key_with(1_000 * TOKEN, Some(100 * TOKEN), BudgetPeriod::None);
        let two = CostAsk {
            choices: 2,
            ..ask(OutputAsk::Exactly(60))
        };
        let e = Reservation::new(key.clone(), two, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InsufficientQuota);
        // Unbounded output is clamped per choice: 4 choices share the 100 tokens.
        let four = CostAsk {
            choices: 4,
            ..ask(OutputAsk::UpTo { max: 128_000, min: 16 })
        };
        let r = Reservation::new(key.clone(), four, 0).unwrap();
        assert_eq!((r.output_tokens(), r.amount()), (25, Usd::from_units(100 * TOKEN)));
        // The upstream's report of all four choices is billed as it is.
        let settled = r.settle(output_tokens(90));
        assert_eq!((settled.cost, settled.fault), (Usd::from_units(90 * TOKEN), None));
    }

    #[test]
    fn an_impossible_report_is_billed_at_the_reservation_and_flagged() {
        let key = key_with(1_000 * TOKEN, Some(500 * TOKEN), BudgetPeriod::None);
        for reported in [
            output_tokens(20_000),
            output_tokens(u64::MAX),
            TokenUsage {
                prompt_tokens: u64::MAX,
                ..TokenUsage::default()
            },
            TokenUsage {
                completion_tokens: 10,
                reasoning_tokens: 11,
                ..TokenUsage::default()
            },
        ] {
            let r = Reservation::new(key.clone(), ask(OutputAsk::Exactly(50)), 0).unwrap();
            let held = r.amount();
            let settled = r.settle(reported);
            assert_eq!(
                (settled.cost, settled.fault),
                (held, Some(UsageFault::Implausible)),
                "{reported:?}"
            );
            assert!(settled.usage.completion_tokens <= 50 && settled.usage.prompt_tokens <= 1_000_000);
            assert!(settled.usage.reasoning_tokens <= settled.usage.completion_tokens);
        }
        // The cap held: 4 × 50 tokens spent of 500, whatever was reported.
        assert_eq!(key.spend.spent(), Usd::from_units(200 * TOKEN));
    }

    #[test]
    fn a_believable_report_above_the_reservation_is_billed_at_the_reservation() {
        // $1 per 1M input tokens: a 10-token estimate, an upstream that counted 5,000.
        let key = key_with(1_000 * TOKEN, None, BudgetPeriod::None);
        let ask = CostAsk {
            rates: PostedRates {
                input_per_mtok: Decimal::ONE,
                cache_write_per_mtok: Decimal::ONE,
                ..rates()
            },
            prompt_tokens: 10,
            ..ask(OutputAsk::Exactly(5))
        };
        let r = Reservation::new(key.clone(), ask, 0).unwrap();
        let held = r.amount();
        let settled = r.settle(TokenUsage {
            prompt_tokens: 5_000,
            completion_tokens: 5,
            ..TokenUsage::default()
        });
        assert_eq!((settled.cost, settled.fault), (held, Some(UsageFault::OverReservation)));
        assert_eq!(settled.usage.prompt_tokens, 5_000);
    }

    #[test]
    fn money_held_by_requests_in_flight_is_a_transient_429() {
        let key = key_with(1_000 * TOKEN, Some(100 * TOKEN), BudgetPeriod::None);
        let first = Reservation::new(key.clone(), ask(OutputAsk::Exactly(60)), 0).unwrap();
        let e = Reservation::new(key.clone(), ask(OutputAsk::Exactly(60)), 0).unwrap_err();
        assert_eq!((e.kind, e.retry_after_s), (ErrorKind::RateLimited, Some(1)));
        for word in ["credit", "balance", "quota"] {
            assert!(!e.message.contains(word), "{}", e.message);
        }
        // Once the first settles, what it spent is gone for good: now it is a 402.
        first.settle(output_tokens(60));
        let e = Reservation::new(key.clone(), ask(OutputAsk::Exactly(60)), 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InsufficientQuota);
        // The same for the account.
        let key = key_with(100 * TOKEN, None, BudgetPeriod::None);
        let _first = Reservation::new(key.clone(), ask(OutputAsk::Exactly(60)), 0).unwrap();
        let e = Reservation::new(key.clone(), ask(OutputAsk::Exactly(60)), 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::RateLimited);
    }
}

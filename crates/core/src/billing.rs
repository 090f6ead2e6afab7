//! The business around the gateway, as types: the ledger's entry kinds, management keys,
//! checkout sessions, payments and referrals. No I/O: the store persists these, the server
//! drives them, a payment provider adapter produces [`PaymentEvent`]s.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::checkout::Quote;
use crate::money::Usd;

/// Why a ledger entry exists. Credits are positive, debits negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// A confirmed payment: exactly the quote's token line.
    Topup,
    /// Usage records committed in one batch (one debit per account per batch).
    Usage,
    /// A referred account's top-up earned its inviter this commission.
    Commission,
    /// A refunded payment's credit taken back.
    Refund,
    /// A charged-back (disputed) payment's credit taken back.
    Chargeback,
    /// The commission of a refunded or charged-back payment taken back from the inviter.
    CommissionReversal,
    /// An operator's credit or debit, always with a reason (the opening balance is one).
    Adjustment,
}

impl LedgerKind {
    /// Every kind, for listings and tests.
    pub const ALL: [LedgerKind; 7] = [
        LedgerKind::Topup,
        LedgerKind::Usage,
        LedgerKind::Commission,
        LedgerKind::Refund,
        LedgerKind::Chargeback,
        LedgerKind::CommissionReversal,
        LedgerKind::Adjustment,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::Topup => "topup",
            LedgerKind::Usage => "usage",
            LedgerKind::Commission => "commission",
            LedgerKind::Refund => "refund",
            LedgerKind::Chargeback => "chargeback",
            LedgerKind::CommissionReversal => "commission_reversal",
            LedgerKind::Adjustment => "adjustment",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<LedgerKind> {
        LedgerKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A management key (`sk-rm-…`): it acts for its account on the management API. Only the
/// SHA-256 of the secret is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagementKey {
    /// `mkey_…`.
    pub id: String,
    /// The account it acts for.
    pub account_id: String,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    /// A non-secret prefix for listings.
    pub hint: String,
    /// A label (`"login 2026-11-25"`, `"ci"`).
    pub name: Option<String>,
    /// Creation time, µs.
    pub created_at_us: i64,
    /// Revocation time, µs.
    pub revoked_at_us: Option<i64>,
}

impl ManagementKey {
    /// A new key for `account_id`: what to store, and the secret to show once.
    pub fn generate(account_id: &str, name: Option<String>, now_us: i64) -> (ManagementKey, String) {
        let secret = crate::secret::generate(crate::secret::MANAGEMENT_PREFIX);
        let key = ManagementKey {
            id: crate::ids::new_id("mkey"),
            account_id: account_id.to_owned(),
            secret_hash: secret.hash,
            hint: secret.hint,
            name,
            created_at_us: now_us,
            revoked_at_us: None,
        };
        (key, secret.plaintext)
    }
}

/// Where a checkout session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Waiting for the payer.
    Open,
    /// Paid and credited.
    Paid,
    /// Paid, then refunded: the credit was taken back.
    Refunded,
    /// Paid, then charged back: the credit was taken back.
    ChargedBack,
}

impl SessionStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Open => "open",
            SessionStatus::Paid => "paid",
            SessionStatus::Refunded => "refunded",
            SessionStatus::ChargedBack => "charged_back",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<SessionStatus> {
        [
            SessionStatus::Open,
            SessionStatus::Paid,
            SessionStatus::Refunded,
            SessionStatus::ChargedBack,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A top-up in progress: the quote the builder accepted and the payment opened for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutSession {
    /// `cs_…`: ours, carried through the provider and back in its webhooks.
    pub id: String,
    /// The account to credit.
    pub account_id: String,
    /// The payment provider's name (`"simulated"`, `"stripe"`).
    pub provider: String,
    /// The provider's own id for this payment session.
    pub provider_session_id: String,
    /// Where the payer goes to pay.
    pub payment_url: String,
    /// What was quoted; `quote.token_line_usd` is what a confirmed payment credits.
    pub quote: Quote,
    /// Where it is.
    pub status: SessionStatus,
    /// The provider's payment id, once paid.
    pub payment_id: Option<String>,
    /// Creation time, µs.
    pub created_at_us: i64,
}

/// What a payment provider told us, read from a verified webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentEvent {
    /// The provider's payment id: a payment is credited at most once under it.
    pub payment_id: String,
    /// What happened.
    pub kind: PaymentEventKind,
}

/// What happened to a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentEventKind {
    /// The payer paid `amount` (major units of `currency`) for checkout session `session_id`.
    Succeeded {
        /// Our `cs_…` id.
        session_id: String,
        /// What was charged, in major units of `currency`.
        amount: Decimal,
        /// ISO 4217, upper case.
        currency: String,
    },
    /// The payment was refunded in full.
    Refunded,
    /// The payment was disputed and charged back.
    ChargedBack,
}

/// A payment confirmation to apply (see [`crate::store::Store::confirm_payment`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentConfirmation {
    /// The provider's name.
    pub provider: String,
    /// The provider's payment id.
    pub payment_id: String,
    /// Our `cs_…` id.
    pub session_id: String,
    /// What the provider charged, major units of `currency`; must equal the quote's total.
    pub amount: Decimal,
    /// ISO 4217; must equal the quote's currency.
    pub currency: String,
    /// The inviter's share of the token line, in percent (the operator's setting, 5 by default).
    pub commission_percent: Decimal,
    /// When, µs.
    pub at_us: i64,
}

/// A confirmed payment and what it credited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The provider's name.
    pub provider: String,
    /// The provider's payment id.
    pub payment_id: String,
    /// Our `cs_…` id.
    pub session_id: String,
    /// The account credited.
    pub account_id: String,
    /// The top-up credited: the quote's token line.
    pub credited: Usd,
    /// The inviter credited a commission, if the account was referred.
    pub referrer_id: Option<String>,
    /// The commission credited to the inviter (zero without one).
    pub commission: Usd,
    /// `Paid`, `Refunded` or `ChargedBack`.
    pub status: SessionStatus,
    /// Taken back from the account by a refund or chargeback (at most `credited`).
    pub reversed: Usd,
    /// Taken back from the inviter (at most `commission`).
    pub commission_reversed: Usd,
    /// Confirmation time, µs.
    pub created_at_us: i64,
}

/// What [`crate::store::Store::confirm_payment`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// Credited now (and the commission, if any).
    Applied(Payment),
    /// This payment id was already confirmed: nothing changed.
    Duplicate(Payment),
    /// No such checkout session for this provider.
    UnknownSession,
    /// The session exists but the charge does not match its quote (amount or currency), or
    /// it was already paid under another payment id: nothing credited.
    Mismatch(String),
}

/// A refund or chargeback to apply (see [`crate::store::Store::reverse_payment`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentReversal {
    /// The provider's name.
    pub provider: String,
    /// The provider's payment id.
    pub payment_id: String,
    /// [`LedgerKind::Refund`] or [`LedgerKind::Chargeback`].
    pub kind: LedgerKind,
    /// The most that may be taken from the payer: what it can spare beyond requests in flight.
    /// The store also never takes more than the committed balance, so no balance goes negative;
    /// what cannot be taken is the operator's loss, recorded as `credited - reversed`.
    pub max_debit: Usd,
    /// The same bound for the inviter's commission.
    pub max_commission_debit: Usd,
    /// When, µs.
    pub at_us: i64,
}

/// What [`crate::store::Store::reverse_payment`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReversalOutcome {
    /// Taken back now.
    Applied(Payment),
    /// Already refunded or charged back: nothing changed.
    Duplicate(Payment),
    /// No confirmed payment with this id (a refund may arrive before its payment's webhook:
    /// the provider retries).
    UnknownPayment,
}

/// Why a referrer could not be attached to an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferralRefusal {
    /// The code is the account's own.
    SelfReferral,
    /// The inviter is (directly or through others) referred by this account.
    Loop,
    /// The account already has a referrer: referral is forever.
    AlreadyReferred,
    /// The account has already topped up: a referrer can only be attached before.
    AlreadyPaid,
}

/// An account referred by the caller, as `GET /v1/referrals` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    /// The referred account.
    pub account_id: String,
    /// Its email (shown masked by the API).
    pub email: String,
    /// When it signed up, µs.
    pub joined_at_us: i64,
    /// Confirmed top-ups that earned a commission.
    pub payments: u64,
    /// Σ commission credited minus Σ reversed.
    pub commission: Usd,
}

/// What an operator's balance adjustment did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdjustOutcome {
    /// Posted as this ledger entry; the new balance.
    Applied {
        /// The entry's id.
        entry_id: i64,
        /// The balance after it.
        balance: Usd,
    },
    /// A debit larger than the balance: refused, nothing posted.
    InsufficientBalance {
        /// The committed balance.
        balance: Usd,
    },
    /// No such account.
    UnknownAccount,
}

/// Characters of an invite code: Crockford's base 32 (no I, L, O, U), so a code read aloud or
/// copied by hand survives.
const INVITE_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Length of an invite code: 32⁸ ≈ 10¹², so a collision (retried) is rare.
pub const INVITE_CODE_LEN: usize = 8;

/// A fresh random invite code.
pub fn new_invite_code() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..INVITE_CODE_LEN)
        .map(|_| char::from(INVITE_ALPHABET[rng.random_range(0..INVITE_ALPHABET.len())]))
        .collect()
}

/// An invite code as typed (any case, surrounding spaces) in its stored form.
pub fn normalize_invite_code(code: &str) -> String {
    code.trim().to_ascii_uppercase()
}

/// An email as stored: trimmed and lower-cased, if it is one (one `@`, non-empty local part and
/// a dotted domain, no whitespace, at most 254 characters).
pub fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let valid = email.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace);
    valid.then_some(email)
}

/// Whether two stored emails reach the same mailbox by `+tag` sub-addressing
/// (`ann+x@mail.com` and `ann@mail.com`): signing up through one's own invite with such an alias
/// is self-referral.
pub fn same_mailbox(a: &str, b: &str) -> bool {
    let base = |e: &str| {
        e.split_once('@')
            .map(|(local, domain)| (local.split('+').next().unwrap_or(local).to_owned(), domain.to_owned()))
    };
    base(a).is_some() && base(a) == base(b)
}

/// Masks an email for another account's eyes: `alice@example.com` → `a***@example.com`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_their_stored_names() {
        for kind in LedgerKind::ALL {
            assert_eq!(LedgerKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(LedgerKind::parse("credit"), None);
        for status in [
            SessionStatus::Open,
            SessionStatus::Paid,
            SessionStatus::Refunded,
            SessionStatus::ChargedBack,
        ] {
            assert_eq!(SessionStatus::parse(status.as_str()), Some(status));
        }
    }

    #[test]
    fn emails_are_normalized_and_aliases_recognized() {
        assert_eq!(normalize_email("  Ann@Example.COM "), Some("ann@example.com".into()));
        for bad in [
            "",
            "ann",
            "@x.com",
            "ann@",
            "ann@x",
            "a b@x.com",
            "a@b@x.com",
            "ann@.com",
            "ann@x.",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad}");
        }
        assert!(same_mailbox("ann+ref@x.com", "ann@x.com"));
        assert!(same_mailbox("ann@x.com", "ann@x.com"));
        assert!(!same_mailbox("ann@x.com", "ann@y.com"));
        assert!(!same_mailbox("anne@x.com", "ann@x.com"));
    }

    #[test]
    fn invite_codes_use_the_unambiguous_alphabet() {
        let a = new_invite_code();
        assert_eq!(a.len(), INVITE_CODE_LEN);
        assert!(a.bytes().all(|b| INVITE_ALPHABET.contains(&b)));
        assert_ne!(a, new_invite_code());
        assert_eq!(normalize_invite_code(" ab12cd34 "), "AB12CD34");
    }

    #[test]
    fn emails_are_masked() {
        assert_eq!(mask_email("alice@example.com"), "a***@example.com");
        assert_eq!(mask_email("é@x.io"), "é***@x.io");
        assert_eq!(mask_email("nobody"), "***");
    }
}

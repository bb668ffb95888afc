//! Accounts and authorizations in the `accounting` database.

use ftgo_platform::{
    ids::{ConsumerId, OrderId},
    money::Money,
};
use sqlx::PgConnection;

use crate::domain::account::{Account, Authorization, AuthorizationState};

type AccountRow = (ConsumerId, i64, i64, bool);

fn account(row: AccountRow) -> sqlx::Result<Account> {
    let (consumer_id, limit, reserved, enabled) = row;
    let money = |v: i64| Money::from_minor_units(v).map_err(|e| sqlx::Error::Decode(e.into()));
    Ok(Account { consumer_id, credit_limit: money(limit)?, reserved: money(reserved)?, enabled })
}

/// Opens the account unless it exists (the ConsumerCreated event may arrive twice).
pub async fn open_account(tx: &mut PgConnection, account: &Account) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO accounts (consumer_id, credit_limit_minor, reserved_minor, enabled) VALUES ($1, $2, $3, $4)
         ON CONFLICT (consumer_id) DO NOTHING",
    )
    .bind(account.consumer_id)
    .bind(account.credit_limit.minor_units())
    .bind(account.reserved.minor_units())
    .bind(account.enabled)
    .execute(tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The one account query; `$rest` (a literal) adds a locking clause.
macro_rules! select_account {
    ($rest:literal) => {
        concat!(
            "SELECT consumer_id, credit_limit_minor, reserved_minor, enabled FROM accounts WHERE consumer_id = $1",
            $rest
        )
    };
}

async fn fetch_account(
    conn: &mut PgConnection,
    query: &'static str,
    consumer_id: ConsumerId,
) -> sqlx::Result<Option<Account>> {
    let row: Option<AccountRow> = sqlx::query_as(query).bind(consumer_id).fetch_optional(conn).await?;
    row.map(account).transpose()
}

pub async fn find_account(conn: &mut PgConnection, consumer_id: ConsumerId) -> sqlx::Result<Option<Account>> {
    fetch_account(conn, select_account!(""), consumer_id).await
}

/// Reads the account and locks it until the transaction ends: authorizations of one consumer are
/// serialized, so two orders cannot both fit under the same remaining credit.
pub async fn lock_account(tx: &mut PgConnection, consumer_id: ConsumerId) -> sqlx::Result<Option<Account>> {
    fetch_account(tx, select_account!(" FOR UPDATE"), consumer_id).await
}

pub async fn save_account(tx: &mut PgConnection, account: &Account) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE accounts SET credit_limit_minor = $2, reserved_minor = $3, enabled = $4 WHERE consumer_id = $1",
    )
    .bind(account.consumer_id)
    .bind(account.credit_limit.minor_units())
    .bind(account.reserved.minor_units())
    .bind(account.enabled)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn find_authorization(conn: &mut PgConnection, order_id: OrderId) -> sqlx::Result<Option<Authorization>> {
    // Order ids are kept as text: the column predates typed ids.
    let row: Option<(String, ConsumerId, i64, String)> =
        sqlx::query_as("SELECT order_id, consumer_id, amount_minor, state FROM authorizations WHERE order_id = $1")
            .bind(order_id.to_string())
            .fetch_optional(conn)
            .await?;
    row.map(|(stored_order_id, consumer_id, amount, state)| {
        Ok(Authorization {
            order_id: stored_order_id.parse()?,
            consumer_id,
            amount: Money::from_minor_units(amount).map_err(|e| sqlx::Error::Decode(e.into()))?,
            state: state
                .parse::<AuthorizationState>()
                .map_err(|_| sqlx::Error::Decode(format!("unknown authorization state {state}").into()))?,
        })
    })
    .transpose()
}

pub async fn save_authorization(tx: &mut PgConnection, authorization: &Authorization) -> sqlx::Result<()> {
    let state: &'static str = authorization.state.into();
    sqlx::query(
        "INSERT INTO authorizations (order_id, consumer_id, amount_minor, state) VALUES ($1, $2, $3, $4)
         ON CONFLICT (order_id) DO UPDATE SET amount_minor = $3, state = $4, updated_at = now()",
    )
    .bind(authorization.order_id.to_string())
    .bind(authorization.consumer_id)
    .bind(authorization.amount.minor_units())
    .bind(state)
    .execute(tx)
    .await?;
    Ok(())
}

//! The Revise Order saga: order `REVISION_PENDING` (the Order Service's own step) -> ticket
//! `REVISION_PENDING` -> authorization revised to the new total -> ticket revised -> order
//! `APPROVED` with the new items. A revision over the credit limit, or a kitchen already
//! PREPARING, is undone: the ticket and the order keep their original items.

use ftgo_platform::{
    ids::{ConsumerId, OrderId},
    money::Money,
};
use ftgo_proto::{accounting::v1 as accounting, kitchen::v1 as kitchen, order::v1 as order};
use serde::{Deserialize, Serialize};

use super::{
    Built, SagaDefinition, Step, command,
    create_order::{TicketLine, ticket_lines},
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviseOrderData {
    pub order_id: OrderId,
    pub consumer_id: ConsumerId,
    pub revised_line_items: Vec<TicketLine>,
    #[serde(rename = "revised_total_minor")]
    pub revised_total: Money,
    /// The total before the revision, to restore the authorization if a later step fails.
    #[serde(rename = "original_total_minor")]
    pub original_total: Money,
}

fn undo_revise_order(d: &ReviseOrderData, reason: &str) -> Built {
    command("order", &order::UndoReviseOrder { order_id: d.order_id.to_string(), reason: reason.to_owned() })
}

fn begin_revise_ticket(d: &ReviseOrderData) -> Built {
    let begin = kitchen::BeginReviseTicket {
        order_id: d.order_id.to_string(),
        revised_line_items: ticket_lines(&d.revised_line_items),
    };
    command("kitchen", &begin)
}

fn undo_begin_revise_ticket(d: &ReviseOrderData, _reason: &str) -> Built {
    command("kitchen", &kitchen::UndoBeginReviseTicket { order_id: d.order_id.to_string() })
}

fn revise_authorization_to(d: &ReviseOrderData, total: Money) -> Built {
    let revise = accounting::ReviseAuthorization {
        consumer_id: d.consumer_id.to_string(),
        order_id: d.order_id.to_string(),
        order_total: Some(total.into()),
    };
    command("accounting", &revise)
}

fn revise_authorization(d: &ReviseOrderData) -> Built {
    revise_authorization_to(d, d.revised_total)
}

fn restore_authorization(d: &ReviseOrderData, _reason: &str) -> Built {
    revise_authorization_to(d, d.original_total)
}

fn confirm_revise_ticket(d: &ReviseOrderData) -> Built {
    let confirm = kitchen::ConfirmReviseTicket {
        order_id: d.order_id.to_string(),
        revised_line_items: ticket_lines(&d.revised_line_items),
    };
    command("kitchen", &confirm)
}

fn confirm_revise_order(d: &ReviseOrderData) -> Built {
    command("order", &order::ConfirmReviseOrder { order_id: d.order_id.to_string() })
}

impl SagaDefinition for ReviseOrderData {
    const TYPE: &'static str = "ReviseOrderSaga";
    const STEPS: &'static [Step<Self>] = &[
        Step::initiated("request revision", undo_revise_order),
        Step::invoke("begin revise ticket", begin_revise_ticket).compensated_by(undo_begin_revise_ticket),
        Step::invoke("revise authorization", revise_authorization).compensated_by(restore_authorization),
        Step::invoke("confirm revise ticket", confirm_revise_ticket),
        Step::invoke("confirm revise order", confirm_revise_order),
    ];
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use prost::Name;

    use super::*;
    use crate::sagas::{
        Saga, SagaState,
        testing::{answer, c1, o1, refusal, reply},
    };

    #[test]
    fn a_revision_over_the_credit_limit_undoes_the_ticket_and_the_order() {
        let data = ReviseOrderData {
            order_id: o1(),
            consumer_id: c1(),
            revised_line_items: vec![],
            revised_total: Money::from_minor_units_const(90_000),
            original_total: Money::from_minor_units_const(2_500),
        };
        let (mut saga, _) = Saga::start(o1(), data, Utc::now());
        let next = answer(&mut saga, &reply(&kitchen::TicketCommandSucceeded { ticket_id: "t-1".into() }));
        assert_eq!(next.unwrap(), accounting::ReviseAuthorization::full_name());
        let why = "credit limit exceeded";
        let refusal = refusal(&accounting::CardAuthorizationFailed { order_id: "o-1".into(), reason: why.into() }, why);
        assert_eq!(answer(&mut saga, &refusal).unwrap(), kitchen::UndoBeginReviseTicket::full_name());
        let next = answer(&mut saga, &reply(&kitchen::TicketCommandSucceeded { ticket_id: "t-1".into() }));
        assert_eq!(next.unwrap(), order::UndoReviseOrder::full_name());
        answer(&mut saga, &reply(&order::OrderCommandSucceeded { order_id: "o-1".into() }));
        assert_eq!(saga.state, SagaState::Compensated);
    }
}

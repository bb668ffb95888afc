//! The Cancel Order saga: order `CANCEL_PENDING` (the Order Service's own step) -> ticket
//! `CANCEL_PENDING` -> authorization released -> ticket `CANCELLED` -> order `CANCELLED`. The
//! kitchen refuses once it is PREPARING; the saga then puts the order back to `APPROVED`.

use ftgo_platform::ids::{ConsumerId, OrderId};
use ftgo_proto::{accounting::v1 as accounting, kitchen::v1 as kitchen, order::v1 as order};
use serde::{Deserialize, Serialize};

use super::{Built, SagaDefinition, Step, command};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOrderData {
    pub order_id: OrderId,
    pub consumer_id: ConsumerId,
}

fn undo_cancel_order(d: &CancelOrderData, reason: &str) -> Built {
    command("order", &order::UndoCancelOrder { order_id: d.order_id.to_string(), reason: reason.to_owned() })
}

fn begin_cancel_ticket(d: &CancelOrderData) -> Built {
    command("kitchen", &kitchen::BeginCancelTicket { order_id: d.order_id.to_string() })
}

fn undo_begin_cancel_ticket(d: &CancelOrderData, _reason: &str) -> Built {
    command("kitchen", &kitchen::UndoBeginCancelTicket { order_id: d.order_id.to_string() })
}

fn reverse_authorization(d: &CancelOrderData) -> Built {
    command(
        "accounting",
        &accounting::ReverseAuthorization { consumer_id: d.consumer_id.to_string(), order_id: d.order_id.to_string() },
    )
}

fn confirm_cancel_ticket(d: &CancelOrderData) -> Built {
    command("kitchen", &kitchen::ConfirmCancelTicket { order_id: d.order_id.to_string() })
}

fn confirm_cancel_order(d: &CancelOrderData) -> Built {
    command("order", &order::ConfirmCancelOrder { order_id: d.order_id.to_string() })
}

impl SagaDefinition for CancelOrderData {
    const TYPE: &'static str = "CancelOrderSaga";
    const STEPS: &'static [Step<Self>] = &[
        Step::initiated("request cancel", undo_cancel_order),
        Step::invoke("begin cancel ticket", begin_cancel_ticket).compensated_by(undo_begin_cancel_ticket),
        Step::invoke("reverse authorization", reverse_authorization),
        Step::invoke("confirm cancel ticket", confirm_cancel_ticket),
        Step::invoke("confirm cancel order", confirm_cancel_order),
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
    fn a_kitchen_that_is_already_preparing_refuses_and_the_order_goes_back_to_approved() {
        let data = CancelOrderData { order_id: o1(), consumer_id: c1() };
        let (mut saga, first) = Saga::start(o1(), data, Utc::now());
        assert_eq!(first.unwrap().command.message_type, kitchen::BeginCancelTicket::full_name());
        let why = "cannot cancel a ticket that is PREPARING";
        let refusal = refusal(&kitchen::TicketCommandRefused { reason: why.into() }, why);
        assert_eq!(answer(&mut saga, &refusal).unwrap(), order::UndoCancelOrder::full_name());
        answer(&mut saga, &reply(&order::OrderCommandSucceeded { order_id: "o-1".into() }));
        assert_eq!(saga.state, SagaState::Compensated);
        assert_eq!(
            saga.failure_reason.as_deref(),
            Some("begin cancel ticket refused: cannot cancel a ticket that is PREPARING")
        );
    }
}

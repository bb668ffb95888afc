//! The Create Order saga: order `APPROVAL_PENDING` -> consumer verified -> ticket `CREATE_PENDING`
//! -> card authorized -> ticket `AWAITING_ACCEPTANCE` -> order `APPROVED`. A refusal at any step
//! cancels the ticket (if one was made), releases the authorization (if one was made) and rejects
//! the order with the reason.

use ftgo_platform::{
    ids::{ConsumerId, InvalidId, OrderId, RestaurantId, TicketId},
    money::Money,
};
use ftgo_proto::{
    accounting::v1 as accounting, common::v1 as common, consumer::v1 as consumer, kitchen::v1 as kitchen,
    order::v1 as order,
};
use serde::{Deserialize, Serialize};

use super::{Built, Reply, SagaDefinition, Step, command};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketLine {
    pub menu_item_id: String,
    pub name: String,
    pub quantity: i32,
}

impl From<&order::OrderLineItem> for TicketLine {
    fn from(l: &order::OrderLineItem) -> Self {
        Self { menu_item_id: l.menu_item_id.clone(), name: l.name.clone(), quantity: l.quantity }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateOrderData {
    pub order_id: OrderId,
    pub consumer_id: ConsumerId,
    pub restaurant_id: RestaurantId,
    #[serde(rename = "order_total_minor")]
    pub order_total: Money,
    pub line_items: Vec<TicketLine>,
    /// Learnt from the kitchen's reply to CreateTicket.
    pub ticket_id: Option<TicketId>,
}

impl CreateOrderData {
    /// The saga's data from the order in `OrderCreated`; an amount out of range is an error.
    pub fn from_order(o: &order::Order) -> Result<Self, String> {
        Ok(Self {
            order_id: o.order_id.parse().map_err(|e: InvalidId| e.to_string())?,
            consumer_id: o.consumer_id.parse().map_err(|e: InvalidId| e.to_string())?,
            restaurant_id: o.restaurant_id.parse().map_err(|e: InvalidId| e.to_string())?,
            order_total: Money::try_from(o.order_total).map_err(|e| format!("order total {e}"))?,
            line_items: o.line_items.iter().map(TicketLine::from).collect(),
            ticket_id: None,
        })
    }

    fn total(&self) -> Option<common::Money> {
        Some(self.order_total.into())
    }
}

pub fn ticket_lines(lines: &[TicketLine]) -> Vec<kitchen::TicketLineItem> {
    lines
        .iter()
        .map(|l| kitchen::TicketLineItem {
            menu_item_id: l.menu_item_id.clone(),
            name: l.name.clone(),
            quantity: l.quantity,
        })
        .collect()
}

fn reject_order(d: &CreateOrderData, reason: &str) -> Built {
    command("order", &order::RejectOrder { order_id: d.order_id.to_string(), reason: reason.to_owned() })
}

fn verify_consumer(d: &CreateOrderData) -> Built {
    let verify = consumer::VerifyConsumer {
        consumer_id: d.consumer_id.to_string(),
        order_id: d.order_id.to_string(),
        order_total: d.total(),
    };
    command("consumer", &verify)
}

fn create_ticket(d: &CreateOrderData) -> Built {
    let create = kitchen::CreateTicket {
        order_id: d.order_id.to_string(),
        restaurant_id: d.restaurant_id.to_string(),
        line_items: ticket_lines(&d.line_items),
    };
    command("kitchen", &create)
}

fn learn_ticket_id(d: &mut CreateOrderData, reply: &Reply) -> Result<(), String> {
    let ticket_id = reply.decode::<kitchen::TicketCreated>()?.ticket_id;
    if ticket_id.trim().is_empty() {
        return Err("the Kitchen Service created a ticket without an id".to_owned());
    }
    d.ticket_id = Some(ticket_id.parse().map_err(|e| format!("the Kitchen Service created a ticket, but {e}"))?);
    Ok(())
}

/// The ticket the Kitchen Service created, which every later ticket command names.
fn ticket_id(d: &CreateOrderData) -> Result<String, String> {
    d.ticket_id
        .map(|id| id.to_string())
        .ok_or_else(|| "the saga has no ticket id (no TicketCreated was recorded)".to_owned())
}

fn cancel_create_ticket(d: &CreateOrderData, _reason: &str) -> Built {
    command("kitchen", &kitchen::CancelCreateTicket { ticket_id: ticket_id(d)? })
}

fn authorize_card(d: &CreateOrderData) -> Built {
    let authorize = accounting::AuthorizeCard {
        consumer_id: d.consumer_id.to_string(),
        order_id: d.order_id.to_string(),
        order_total: d.total(),
    };
    command("accounting", &authorize)
}

fn reverse_authorization(d: &CreateOrderData, _reason: &str) -> Built {
    command(
        "accounting",
        &accounting::ReverseAuthorization { consumer_id: d.consumer_id.to_string(), order_id: d.order_id.to_string() },
    )
}

fn confirm_create_ticket(d: &CreateOrderData) -> Built {
    command("kitchen", &kitchen::ConfirmCreateTicket { ticket_id: ticket_id(d)? })
}

fn approve_order(d: &CreateOrderData) -> Built {
    command("order", &order::ApproveOrder { order_id: d.order_id.to_string() })
}

impl SagaDefinition for CreateOrderData {
    const TYPE: &'static str = "CreateOrderSaga";
    const STEPS: &'static [Step<Self>] = &[
        Step::initiated("create order", reject_order),
        Step::invoke("verify consumer", verify_consumer),
        Step::invoke("create ticket", create_ticket).compensated_by(cancel_create_ticket).on_success(learn_ticket_id),
        Step::invoke("authorize card", authorize_card).compensated_by(reverse_authorization),
        Step::invoke("confirm ticket", confirm_create_ticket),
        Step::invoke("approve order", approve_order),
    ];
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use prost::Name;

    use super::*;
    use crate::sagas::{
        Overdue, ReplyError, Saga, SagaState, StepStatus,
        testing::{T1, answer, c1, o1, r1, refusal, reply},
    };

    fn data() -> CreateOrderData {
        CreateOrderData {
            order_id: o1(),
            consumer_id: c1(),
            restaurant_id: r1(),
            order_total: Money::from_minor_units_const(2500),
            line_items: vec![TicketLine { menu_item_id: "1".into(), name: "Dal".into(), quantity: 2 }],
            ticket_id: None,
        }
    }

    fn created() -> Reply {
        reply(&kitchen::TicketCreated { ticket_id: T1.into() })
    }

    #[test]
    fn the_happy_path_runs_every_step_in_order() {
        let (mut saga, first) = Saga::start(o1(), data(), Utc::now());
        assert_eq!(first.unwrap().command.message_type, consumer::VerifyConsumer::full_name());
        let next = answer(&mut saga, &reply(&consumer::ConsumerVerified { consumer_id: "c-1".into() }));
        assert_eq!(next.unwrap(), kitchen::CreateTicket::full_name());
        assert_eq!(answer(&mut saga, &created()).unwrap(), accounting::AuthorizeCard::full_name());
        assert_eq!(saga.data.ticket_id.map(|t| t.to_string()).as_deref(), Some(T1));
        let next = answer(&mut saga, &reply(&accounting::CardAuthorized { order_id: "o-1".into() }));
        assert_eq!(next.unwrap(), kitchen::ConfirmCreateTicket::full_name());
        let next = answer(&mut saga, &reply(&kitchen::TicketCommandSucceeded { ticket_id: "t-1".into() }));
        assert_eq!(next.unwrap(), order::ApproveOrder::full_name());
        assert_eq!(answer(&mut saga, &reply(&order::OrderCommandSucceeded { order_id: "o-1".into() })), None);
        assert_eq!(saga.state, SagaState::Succeeded);
        assert!(saga.history.iter().all(|r| r.status == StepStatus::Done));
        assert_eq!(saga.history.len(), 6);
    }

    #[test]
    fn a_ticket_without_an_id_is_a_refusal_and_a_missing_id_is_never_sent_blank() {
        // A TicketCreated without an id refuses the step: the order is rejected.
        let (mut saga, _) = Saga::start(o1(), data(), Utc::now());
        answer(&mut saga, &reply(&consumer::ConsumerVerified { consumer_id: "c-1".into() }));
        let next = answer(&mut saga, &reply(&kitchen::TicketCreated { ticket_id: " ".into() }));
        assert_eq!(next.unwrap(), order::RejectOrder::full_name());
        assert_eq!(
            saga.failure_reason.as_deref(),
            Some("create ticket refused: the Kitchen Service created a ticket without an id")
        );
        assert_eq!(saga.data.ticket_id, None);

        // Should the id be lost anyway, the ticket commands are not sent with a blank id: the
        // confirmation counts as refused, the card is released, and the ticket's compensation,
        // which cannot name it either, is recorded as refused for an operator.
        let (mut saga, _) = Saga::start(o1(), data(), Utc::now());
        answer(&mut saga, &reply(&consumer::ConsumerVerified { consumer_id: "c-1".into() }));
        answer(&mut saga, &created());
        saga.data.ticket_id = None;
        let next = answer(&mut saga, &reply(&accounting::CardAuthorized { order_id: "o-1".into() }));
        assert_eq!(next.unwrap(), accounting::ReverseAuthorization::full_name());
        assert!(saga.failure_reason.as_deref().unwrap().starts_with("confirm ticket could not be sent"), "{saga:?}");
        let next = answer(&mut saga, &reply(&accounting::CardAuthorized { order_id: "o-1".into() }));
        assert_eq!(next.unwrap(), order::RejectOrder::full_name());
        let ticket =
            saga.history.iter().find(|r| r.name == "create ticket" && r.status == StepStatus::CompensationRefused);
        assert!(ticket.is_some_and(|r| r.detail.as_deref().unwrap().contains("no ticket id")), "{:#?}", saga.history);
        assert_eq!(answer(&mut saga, &reply(&order::OrderCommandSucceeded { order_id: "o-1".into() })), None);
        assert_eq!(saga.state, SagaState::Compensated);
    }

    #[test]
    fn an_unknown_consumer_rejects_the_order_and_nothing_else_needs_undoing() {
        let (mut saga, _) = Saga::start(o1(), data(), Utc::now());
        let why = "consumer c-1 does not exist";
        let refusal =
            refusal(&consumer::ConsumerVerificationFailed { consumer_id: "c-1".into(), reason: why.into() }, why);
        let next = answer(&mut saga, &refusal);
        assert_eq!(next.unwrap(), order::RejectOrder::full_name());
        assert_eq!(saga.failure_reason.as_deref(), Some("verify consumer refused: consumer c-1 does not exist"));
        assert_eq!(answer(&mut saga, &reply(&order::OrderCommandSucceeded { order_id: "o-1".into() })), None);
        assert_eq!(saga.state, SagaState::Compensated);
    }

    #[test]
    fn a_refused_card_cancels_the_ticket_then_rejects_the_order() {
        let (mut saga, _) = Saga::start(o1(), data(), Utc::now());
        answer(&mut saga, &reply(&consumer::ConsumerVerified { consumer_id: "c-1".into() }));
        answer(&mut saga, &created());
        let why = "credit limit exceeded";
        let refusal = refusal(&accounting::CardAuthorizationFailed { order_id: "o-1".into(), reason: why.into() }, why);
        let header = saga.expected_step_header().unwrap().to_owned();
        let next = saga.on_reply(&header, &refusal, Utc::now()).unwrap().unwrap();
        assert_eq!(next.command.message_type, kitchen::CancelCreateTicket::full_name());
        assert_eq!(next.step_header, "2:c");
        let next = answer(&mut saga, &reply(&kitchen::TicketCommandSucceeded { ticket_id: "t-1".into() }));
        assert_eq!(next.unwrap(), order::RejectOrder::full_name());
        answer(&mut saga, &reply(&order::OrderCommandSucceeded { order_id: "o-1".into() }));
        assert_eq!(saga.state, SagaState::Compensated);
        let statuses: Vec<_> = saga.history.iter().map(|r| (r.name.as_str(), r.status)).collect();
        assert_eq!(
            statuses,
            [
                ("create order", StepStatus::Done),
                ("verify consumer", StepStatus::Done),
                ("create ticket", StepStatus::Done),
                ("authorize card", StepStatus::Refused),
                ("create ticket", StepStatus::Compensated),
                ("create order", StepStatus::Compensated),
            ]
        );
    }

    #[test]
    fn a_stale_or_late_reply_changes_nothing() {
        let (mut saga, _) = Saga::start(o1(), data(), Utc::now());
        let before = saga.clone();
        let verified = reply(&consumer::ConsumerVerified { consumer_id: "c-1".into() });
        assert!(saga.on_reply("3:f", &verified, Utc::now()).is_err());
        assert_eq!(saga, before);
        let refusal =
            refusal(&consumer::ConsumerVerificationFailed { consumer_id: "c-1".into(), reason: "no".into() }, "no");
        answer(&mut saga, &refusal);
        answer(&mut saga, &reply(&order::OrderCommandSucceeded { order_id: "o-1".into() }));
        assert!(saga.on_reply("0:c", &verified, Utc::now()).is_err(), "a finished saga takes no more replies");
    }

    #[test]
    fn an_unanswered_step_is_sent_again_then_undone_with_its_own_compensation() {
        let (mut saga, _) = Saga::start(o1(), data(), Utc::now());
        answer(&mut saga, &reply(&consumer::ConsumerVerified { consumer_id: "c-1".into() }));
        answer(&mut saga, &created());
        // "authorize card" goes unanswered: sent again, with the same step, while attempts remain.
        let Overdue::Resent(again) = saga.on_deadline(3, Utc::now()) else { panic!("not sent again") };
        assert_eq!(
            (again.command.message_type.as_str(), again.step_header.as_str()),
            ("ftgo.accounting.v1.AuthorizeCard", "3:f")
        );
        assert!(matches!(saga.on_deadline(3, Utc::now()), Overdue::Resent(_)));
        assert_eq!(saga.attempts, 3);
        // Then the card may have been authorized without the reply arriving: it is reversed first.
        let Overdue::GaveUp(Some(undo)) = saga.on_deadline(3, Utc::now()) else { panic!("no compensation") };
        assert_eq!(undo.command.message_type, accounting::ReverseAuthorization::full_name());
        assert_eq!((undo.step_header.as_str(), saga.attempts), ("3:c", 1));
        assert_eq!(saga.failure_reason.as_deref(), Some("authorize card got no reply after 3 attempts"));
        // A late reply to the abandoned forward step is stale.
        let late = reply(&accounting::CardAuthorized { order_id: "o-1".into() });
        assert!(matches!(saga.on_reply("3:f", &late, Utc::now()), Err(ReplyError::Stale { .. })));
        let next = answer(&mut saga, &reply(&accounting::CardAuthorized { order_id: "o-1".into() }));
        assert_eq!(next.unwrap(), kitchen::CancelCreateTicket::full_name());
        answer(&mut saga, &reply(&kitchen::TicketCommandSucceeded { ticket_id: "t-1".into() }));
        answer(&mut saga, &reply(&order::OrderCommandSucceeded { order_id: "o-1".into() }));
        assert_eq!(saga.state, SagaState::Compensated);
        let statuses: Vec<_> = saga.history.iter().skip(3).map(|r| (r.name.as_str(), r.status)).collect();
        assert_eq!(
            statuses,
            [
                ("authorize card", StepStatus::Resent),
                ("authorize card", StepStatus::Resent),
                ("authorize card", StepStatus::TimedOut),
                ("authorize card", StepStatus::Compensated),
                ("create ticket", StepStatus::Compensated),
                ("create order", StepStatus::Compensated),
            ]
        );
        assert_eq!(saga.on_deadline(3, Utc::now()), Overdue::NotWaiting, "a finished saga has no deadline");
    }

    #[test]
    fn a_step_after_the_pivot_that_goes_unanswered_fails_the_saga_until_its_reply_comes() {
        let (mut saga, _) = Saga::start(o1(), data(), Utc::now());
        answer(&mut saga, &reply(&consumer::ConsumerVerified { consumer_id: "c-1".into() }));
        answer(&mut saga, &created());
        answer(&mut saga, &reply(&accounting::CardAuthorized { order_id: "o-1".into() }));
        answer(&mut saga, &reply(&kitchen::TicketCommandSucceeded { ticket_id: "t-1".into() }));
        // "approve order" cannot be undone by giving up: the saga fails, and says why.
        assert!(matches!(saga.on_deadline(2, Utc::now()), Overdue::Resent(_)));
        assert_eq!(saga.on_deadline(2, Utc::now()), Overdue::GaveUp(None));
        assert_eq!(saga.state, SagaState::Failed);
        assert_eq!(saga.failure_reason.as_deref(), Some("approve order got no reply after 2 attempts"));
        assert_eq!(saga.history.last().unwrap().status, StepStatus::TimedOut);
        assert_eq!(saga.on_deadline(2, Utc::now()), Overdue::NotWaiting, "a failed saga is not sent again");
        // The reply that comes at last (say, once an operator replayed the dead letter) ends it.
        assert_eq!(answer(&mut saga, &reply(&order::OrderCommandSucceeded { order_id: "o-1".into() })), None);
        assert_eq!((saga.state, saga.failure_reason.as_deref()), (SagaState::Succeeded, None));
    }

    #[test]
    fn an_unanswered_compensation_fails_the_saga_and_keeps_why_it_compensated() {
        let (mut saga, _) = Saga::start(o1(), data(), Utc::now());
        let why = "consumer c-1 does not exist";
        answer(
            &mut saga,
            &refusal(&consumer::ConsumerVerificationFailed { consumer_id: "c-1".into(), reason: why.into() }, why),
        );
        assert_eq!(saga.expected_step_header(), Some("0:c"));
        assert_eq!(saga.on_deadline(1, Utc::now()), Overdue::GaveUp(None));
        assert_eq!(saga.state, SagaState::Failed);
        assert!(saga.is_compensating());
        assert_eq!(saga.failure_reason.as_deref(), Some("verify consumer refused: consumer c-1 does not exist"));
        let gave_up = saga.history.last().unwrap();
        assert_eq!(gave_up.detail.as_deref(), Some("create order got no reply after 1 attempt"));
        // The late reply finishes the compensation.
        answer(&mut saga, &reply(&order::OrderCommandSucceeded { order_id: "o-1".into() }));
        assert_eq!(saga.state, SagaState::Compensated);
    }
}

//! The ticket a kitchen prepares for one order, and its guarded state machine.
//!
//! ```text
//! CREATE_PENDING --confirm_create--> AWAITING_ACCEPTANCE --accept--> ACCEPTED --prepare--> PREPARING
//!      |                                  |      ^                     |   ^                    |
//!  cancel_create                  begin_cancel / undo / confirm_revise (either of the two)     ready
//!      v                                  v      |                     v   |                    v
//!  CANCELLED <--confirm_cancel-- CANCEL_PENDING / REVISION_PENDING                      READY_FOR_PICKUP
//!                                                                                               |
//!                                                                                            pick_up
//!                                                                                               v
//!                                                                                           PICKED_UP
//! ```
//!
//! Every method checks the current state and returns [`TicketError::IllegalTransition`] instead of
//! overwriting it: once the kitchen is PREPARING, a cancel or a revision is refused, and the saga
//! that asked compensates.

use chrono::{DateTime, Utc};
use ftgo_platform::ids::{OrderId, RestaurantId, TicketId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumString, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum TicketState {
    CreatePending,
    AwaitingAcceptance,
    Accepted,
    Preparing,
    ReadyForPickup,
    PickedUp,
    CancelPending,
    Cancelled,
    RevisionPending,
}

impl TicketState {
    pub const ALL: &[Self] = <Self as strum::VariantArray>::VARIANTS;

    /// The name used in the API and in the database (`AWAITING_ACCEPTANCE`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// Whether the order may still be cancelled or revised.
    fn is_changeable(self) -> bool {
        matches!(self, Self::AwaitingAcceptance | Self::Accepted)
    }
}

/// One line of a ticket; stored as JSON (`menuItemId`, `name`, `quantity`) in the ticket's row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketLineItem {
    pub menu_item_id: String,
    pub name: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: TicketId,
    pub order_id: OrderId,
    pub restaurant_id: RestaurantId,
    pub state: TicketState,
    /// Where a pending cancel or revision returns to.
    pub previous_state: Option<TicketState>,
    pub line_items: Vec<TicketLineItem>,
    pub ready_by: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("cannot {action} a ticket that is {}", state.as_str())]
    IllegalTransition { action: &'static str, state: TicketState },
    #[error("readyBy must be in the future")]
    ReadyByInThePast,
}

impl Ticket {
    /// A new ticket for an order, waiting for the saga to confirm it.
    pub fn create(order_id: OrderId, restaurant_id: RestaurantId, line_items: Vec<TicketLineItem>) -> Self {
        Self {
            id: TicketId::new(),
            order_id,
            restaurant_id,
            state: TicketState::CreatePending,
            previous_state: None,
            line_items,
            ready_by: None,
        }
    }

    fn transition(
        &mut self,
        action: &'static str,
        allowed: &[TicketState],
        to: TicketState,
    ) -> Result<(), TicketError> {
        if !allowed.contains(&self.state) {
            return Err(TicketError::IllegalTransition { action, state: self.state });
        }
        self.state = to;
        Ok(())
    }

    pub fn confirm_create(&mut self) -> Result<(), TicketError> {
        self.transition("confirm", &[TicketState::CreatePending], TicketState::AwaitingAcceptance)
    }

    pub fn cancel_create(&mut self) -> Result<(), TicketError> {
        self.transition("cancel the creation of", &[TicketState::CreatePending], TicketState::Cancelled)
    }

    pub fn accept(&mut self, ready_by: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), TicketError> {
        if self.state == TicketState::AwaitingAcceptance && ready_by <= now {
            return Err(TicketError::ReadyByInThePast);
        }
        self.transition("accept", &[TicketState::AwaitingAcceptance], TicketState::Accepted)?;
        self.ready_by = Some(ready_by);
        Ok(())
    }

    pub fn prepare(&mut self) -> Result<(), TicketError> {
        self.transition("start preparing", &[TicketState::Accepted], TicketState::Preparing)
    }

    pub fn mark_ready(&mut self) -> Result<(), TicketError> {
        self.transition("mark ready", &[TicketState::Preparing], TicketState::ReadyForPickup)
    }

    pub fn pick_up(&mut self) -> Result<(), TicketError> {
        self.transition("pick up", &[TicketState::ReadyForPickup], TicketState::PickedUp)
    }

    fn begin_pending(&mut self, action: &'static str, pending: TicketState) -> Result<(), TicketError> {
        if !self.state.is_changeable() {
            return Err(TicketError::IllegalTransition { action, state: self.state });
        }
        self.previous_state = Some(self.state);
        self.state = pending;
        Ok(())
    }

    fn end_pending(&mut self, action: &'static str, pending: TicketState) -> Result<(), TicketError> {
        let previous = match (self.state == pending, self.previous_state) {
            (true, Some(previous)) => previous,
            _ => return Err(TicketError::IllegalTransition { action, state: self.state }),
        };
        self.state = previous;
        self.previous_state = None;
        Ok(())
    }

    pub fn begin_cancel(&mut self) -> Result<(), TicketError> {
        self.begin_pending("cancel", TicketState::CancelPending)
    }

    pub fn confirm_cancel(&mut self) -> Result<(), TicketError> {
        self.transition("confirm the cancellation of", &[TicketState::CancelPending], TicketState::Cancelled)?;
        self.previous_state = None;
        Ok(())
    }

    pub fn undo_begin_cancel(&mut self) -> Result<(), TicketError> {
        self.end_pending("undo the cancellation of", TicketState::CancelPending)
    }

    pub fn begin_revise(&mut self) -> Result<(), TicketError> {
        self.begin_pending("revise", TicketState::RevisionPending)
    }

    pub fn confirm_revise(&mut self, line_items: Vec<TicketLineItem>) -> Result<(), TicketError> {
        self.end_pending("confirm the revision of", TicketState::RevisionPending)?;
        self.line_items = line_items;
        Ok(())
    }

    pub fn undo_begin_revise(&mut self) -> Result<(), TicketError> {
        self.end_pending("undo the revision of", TicketState::RevisionPending)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::{TicketState::*, *};

    /// The stored names are the rows' contract: derived, but pinned here.
    #[test]
    fn states_are_stored_by_their_screaming_names_and_read_back() {
        let names: Vec<&str> = TicketState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "CREATE_PENDING",
                "AWAITING_ACCEPTANCE",
                "ACCEPTED",
                "PREPARING",
                "READY_FOR_PICKUP",
                "PICKED_UP",
                "CANCEL_PENDING",
                "CANCELLED",
                "REVISION_PENDING"
            ]
        );
        for &state in TicketState::ALL {
            assert_eq!(TicketState::parse(state.as_str()), Some(state));
        }
        assert_eq!(TicketState::parse("Preparing"), None);
    }

    type Action = fn(&mut Ticket) -> Result<(), TicketError>;
    /// An action's name, the action, and each state it is legal in with the state it leads to.
    type Rule = (&'static str, Action, Vec<(TicketState, TicketState)>);

    fn accept(t: &mut Ticket) -> Result<(), TicketError> {
        let now = Utc::now();
        t.accept(now + Duration::minutes(30), now)
    }

    fn actions() -> Vec<Rule> {
        vec![
            ("confirm_create", Ticket::confirm_create, vec![(CreatePending, AwaitingAcceptance)]),
            ("cancel_create", Ticket::cancel_create, vec![(CreatePending, Cancelled)]),
            ("accept", accept, vec![(AwaitingAcceptance, Accepted)]),
            ("prepare", Ticket::prepare, vec![(Accepted, Preparing)]),
            ("mark_ready", Ticket::mark_ready, vec![(Preparing, ReadyForPickup)]),
            ("pick_up", Ticket::pick_up, vec![(ReadyForPickup, PickedUp)]),
            (
                "begin_cancel",
                Ticket::begin_cancel,
                vec![(AwaitingAcceptance, CancelPending), (Accepted, CancelPending)],
            ),
            ("confirm_cancel", Ticket::confirm_cancel, vec![(CancelPending, Cancelled)]),
            ("undo_begin_cancel", Ticket::undo_begin_cancel, vec![(CancelPending, Accepted)]),
            (
                "begin_revise",
                Ticket::begin_revise,
                vec![(AwaitingAcceptance, RevisionPending), (Accepted, RevisionPending)],
            ),
            ("confirm_revise", |t| t.confirm_revise(vec![]), vec![(RevisionPending, Accepted)]),
            ("undo_begin_revise", Ticket::undo_begin_revise, vec![(RevisionPending, Accepted)]),
        ]
    }

    /// A ticket in `state`; pending states remember ACCEPTED as where they came from.
    fn ticket_in(state: TicketState) -> Ticket {
        let mut ticket = Ticket::create(OrderId::new(), RestaurantId::new(), vec![]);
        ticket.state = state;
        if matches!(state, CancelPending | RevisionPending) {
            ticket.previous_state = Some(Accepted);
        }
        ticket
    }

    #[test]
    fn every_legal_transition_leads_where_it_should_and_every_other_is_refused_unchanged() {
        for (name, action, legal) in actions() {
            for &from in TicketState::ALL {
                let mut ticket = ticket_in(from);
                let before = ticket.clone();
                match (action(&mut ticket), legal.iter().find(|(f, _)| *f == from)) {
                    (Ok(()), Some((_, to))) => assert_eq!(ticket.state, *to, "{name} from {from:?}"),
                    (Err(TicketError::IllegalTransition { state, .. }), None) => {
                        assert_eq!(state, from);
                        assert_eq!(ticket, before, "{name} from {from:?} must change nothing");
                    }
                    (result, expected) => panic!("{name} from {from:?}: got {result:?}, expected {expected:?}"),
                }
            }
        }
    }

    #[test]
    fn a_pending_cancel_or_revision_returns_to_the_state_it_came_from() {
        let mut ticket = ticket_in(AwaitingAcceptance);
        ticket.begin_cancel().unwrap();
        ticket.undo_begin_cancel().unwrap();
        assert_eq!((ticket.state, ticket.previous_state), (AwaitingAcceptance, None));

        ticket.begin_revise().unwrap();
        let items = vec![TicketLineItem { menu_item_id: "1".into(), name: "dal".into(), quantity: 2 }];
        ticket.confirm_revise(items.clone()).unwrap();
        assert_eq!((ticket.state, ticket.line_items), (AwaitingAcceptance, items));
    }

    #[test]
    fn the_refusal_says_what_and_why() {
        let mut ticket = ticket_in(Preparing);
        assert_eq!(ticket.begin_cancel().unwrap_err().to_string(), "cannot cancel a ticket that is PREPARING");
    }

    #[test]
    fn accepting_needs_a_time_in_the_future() {
        let mut ticket = ticket_in(AwaitingAcceptance);
        let now = Utc::now();
        assert_eq!(ticket.accept(now - Duration::minutes(1), now), Err(TicketError::ReadyByInThePast));
        assert_eq!(ticket.state, AwaitingAcceptance);
        ticket.accept(now + Duration::minutes(20), now).unwrap();
        assert_eq!(ticket.ready_by, Some(now + Duration::minutes(20)));
    }

    #[test]
    fn state_names_round_trip() {
        for &state in TicketState::ALL {
            assert_eq!(TicketState::parse(state.as_str()), Some(state));
        }
        assert_eq!(TicketState::parse("COOKING"), None);
    }
}

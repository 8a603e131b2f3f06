//! How far this child got with the message in its held list: one state
//! instead of a pending finish, an "acked here" flag and a stage kept apart.
//!
//! When a Redis error sends the message back from the held list, this says
//! whether to run it (`Started`), only finish it (`Ran`), or (if it is not
//! ours) record it lost (see `triage`).

use crate::broker::reserve::Finish;

#[derive(Debug, Clone, PartialEq, Default)]
pub enum InHand {
    /// Nothing of this child's between its triage and its finish.
    #[default]
    Free,
    /// Reported started, not run yet; `acked_here` when this child's START
    /// script acked it early. Back from the held list, it runs.
    Started { id: String, acked_here: bool },
    /// Its task ran here. Back from the held list, only its finish is left;
    /// `finish` is that finish while it is pending (none when a requeue of
    /// it failed).
    Ran {
        id: String,
        acked_here: bool,
        finish: Option<Finish>,
    },
    /// Decided without running (recorded lost, expired): its finish pending.
    Closing(Finish),
}

impl InHand {
    /// The finish waiting for the next reservation, if any.
    pub fn finish(&self) -> Option<&Finish> {
        match self {
            InHand::Ran {
                finish: Some(f), ..
            }
            | InHand::Closing(f) => Some(f),
            _ => None,
        }
    }

    pub fn finish_mut(&mut self) -> Option<&mut Finish> {
        match self {
            InHand::Ran {
                finish: Some(f), ..
            }
            | InHand::Closing(f) => Some(f),
            _ => None,
        }
    }

    /// Takes the pending finish out (to retry it apart), leaving the rest.
    pub fn take_finish(&mut self) -> Option<Finish> {
        match self {
            InHand::Ran { finish, .. } => finish.take(),
            InHand::Closing(_) => match std::mem::take(self) {
                InHand::Closing(f) => Some(f),
                _ => None,
            },
            _ => None,
        }
    }

    /// Puts back a finish `take_finish` took (its retry failed).
    pub fn restore_finish(&mut self, f: Finish) {
        match self {
            InHand::Ran { finish, .. } => *finish = Some(f),
            _ => *self = InHand::Closing(f),
        }
    }

    /// Whether a handled message still waits for its finish.
    pub fn finishing(&self) -> bool {
        self.finish().is_some()
    }

    /// This child reported `id` started and has not run it yet.
    pub fn started(&self, id: &str) -> bool {
        matches!(self, InHand::Started { id: mine, .. } if mine == id)
    }

    /// This child ran `id` already.
    pub fn ran(&self, id: &str) -> bool {
        matches!(self, InHand::Ran { id: mine, .. } if mine == id)
    }

    /// This child's START script acked the message (it is out of kombu's
    /// `unacked` since).
    pub fn acked_here(&self) -> bool {
        matches!(
            self,
            InHand::Started {
                acked_here: true,
                ..
            } | InHand::Ran {
                acked_here: true,
                ..
            }
        )
    }

    /// START acked the started message.
    pub fn set_acked_here(&mut self) {
        if let InHand::Started { acked_here, .. } = self {
            *acked_here = true;
        }
    }

    /// The task runs from here on: coming back, it is to be finished.
    pub fn to_ran(&mut self) {
        if let InHand::Started { id, acked_here } = self {
            *self = InHand::Ran {
                id: std::mem::take(id),
                acked_here: *acked_here,
                finish: None,
            };
        }
    }

    /// Sets the message's finish: kept under `Ran` when `id` ran here, else
    /// a finish of its own.
    pub fn set_finish(&mut self, id: &str, f: Finish) {
        match self {
            InHand::Ran {
                id: mine, finish, ..
            } if mine == id => *finish = Some(f),
            _ => *self = InHand::Closing(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Reserved;

    fn finish(id: &str) -> Finish {
        Finish {
            task_id: id.into(),
            task: "t".into(),
            tag: None,
            msg: Reserved {
                raw: "{}".into(),
                invalid_utf8: None,
                source: String::new(),
                from_eta_park: false,
                started: false,
                acked: false,
                revoked: false,
            },
            result: None,
            in_unacked: false,
        }
    }

    #[test]
    fn a_run_task_keeps_its_id_through_the_finish() {
        let mut hand = InHand::Started {
            id: "a".into(),
            acked_here: true,
        };
        assert!(hand.started("a") && hand.acked_here() && !hand.finishing());
        hand.to_ran();
        assert!(hand.ran("a") && hand.acked_here() && !hand.started("a"));
        hand.set_finish("a", finish("a"));
        assert!(hand.ran("a") && hand.finishing());
        let f = hand.take_finish();
        assert!(hand.ran("a") && !hand.finishing());
        hand.restore_finish(f.expect("finish"));
        assert_eq!(hand.finish().map(|f| f.task_id.as_str()), Some("a"));
    }

    #[test]
    fn a_finish_without_a_run_is_its_own() {
        let mut hand = InHand::Free;
        hand.set_finish("b", finish("b"));
        assert!(matches!(hand, InHand::Closing(_)) && !hand.ran("b"));
        assert!(hand.take_finish().is_some());
        assert_eq!(hand, InHand::Free);
    }
}

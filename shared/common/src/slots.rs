//! Places each user holds in something a replica shares (open event streams, the agent's
//! turns), at most a bound each. A place is held by a value and freed when it is dropped.

use crate::UserId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct PerUser {
    held: Mutex<HashMap<UserId, i64>>,
}

/// One place; dropping it frees it.
#[derive(Debug)]
pub struct Place {
    slots: Arc<PerUser>,
    user: UserId,
}

impl PerUser {
    /// A place for one more of `user`'s, or `None` when they hold `bound` already (a bound of
    /// 0 is none).
    pub fn take(self: &Arc<Self>, user: UserId, bound: i64) -> Option<Place> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(user).or_default();
        if bound > 0 && *n >= bound {
            return None;
        }
        *n += 1;
        Some(Place {
            slots: self.clone(),
            user,
        })
    }

    /// Places `user` holds now.
    pub fn held(&self, user: UserId) -> i64 {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&user).copied().unwrap_or(0)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.user) {
            *n -= 1;
            if *n <= 0 {
                held.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_at_most_the_bound_and_a_dropped_place_is_free_again() {
        let slots = Arc::new(PerUser::default());
        let (a, b) = (UserId(uuid::Uuid::new_v4()), UserId(uuid::Uuid::new_v4()));
        let first = slots.take(a, 2).unwrap();
        let _second = slots.take(a, 2).unwrap();
        assert!(slots.take(a, 2).is_none());
        assert!(slots.take(b, 2).is_some(), "others are not affected");
        drop(first);
        assert_eq!(slots.held(a), 1);
        assert!(slots.take(a, 2).is_some());
        assert!(slots.take(a, 0).is_some(), "0 is no bound");
    }
}

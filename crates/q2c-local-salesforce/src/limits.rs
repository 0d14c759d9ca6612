//! The org's daily API budget: every REST call spends one (a composite
//! too, whatever it carries), every REST answer reports it in
//! `Sforce-Limit-Info`, and once it is spent calls are refused. It never
//! resets by itself: a test sets it through the console or the handle.

use std::sync::Mutex;

use crate::bus::lock;

/// The budget as `Sforce-Limit-Info: api-usage=<used>/<max>` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Calls counted in the (never ending) day.
    pub used: u64,
    /// Calls allowed.
    pub max: u64,
}

impl Usage {
    /// The header value.
    pub fn header(self) -> String {
        format!("api-usage={}/{}", self.used, self.max)
    }
}

/// The budget and how many calls were counted since start.
pub(crate) struct Budget {
    state: Mutex<State>,
}

struct State {
    usage: Usage,
    /// Calls counted since start, whatever `set` did to `used`.
    counted: u64,
}

impl Budget {
    /// A budget of `max` calls, none used.
    pub fn new(max: u64) -> Self {
        Self {
            state: Mutex::new(State {
                usage: Usage { used: 0, max },
                counted: 0,
            }),
        }
    }

    /// Counts one call, or refuses it when the budget is spent.
    pub fn spend(&self) -> Result<Usage, Usage> {
        let mut state = lock(&self.state);
        if state.usage.used >= state.usage.max {
            return Err(state.usage);
        }
        state.usage.used += 1;
        state.counted += 1;
        Ok(state.usage)
    }

    /// The budget now.
    pub fn usage(&self) -> Usage {
        lock(&self.state).usage
    }

    /// Calls counted since start.
    pub fn counted(&self) -> u64 {
        lock(&self.state).counted
    }

    /// Sets the calls used, the calls allowed, or both.
    pub fn set(&self, used: Option<u64>, max: Option<u64>) -> Usage {
        let mut state = lock(&self.state);
        if let Some(used) = used {
            state.usage.used = used;
        }
        if let Some(max) = max {
            state.usage.max = max;
        }
        state.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_spend_the_budget_until_it_is_gone() {
        let budget = Budget::new(2);
        assert_eq!(budget.spend(), Ok(Usage { used: 1, max: 2 }));
        assert_eq!(
            budget.spend().map(Usage::header),
            Ok("api-usage=2/2".into())
        );
        assert_eq!(budget.spend(), Err(Usage { used: 2, max: 2 }));
        assert_eq!(budget.counted(), 2);
        budget.set(Some(0), None);
        assert_eq!(budget.spend(), Ok(Usage { used: 1, max: 2 }));
        assert_eq!(budget.set(None, Some(1)), Usage { used: 1, max: 1 });
        assert!(budget.spend().is_err());
        assert_eq!(budget.counted(), 3);
    }
}

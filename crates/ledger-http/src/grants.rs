//! Who may grant what, decided where the change commits.
//!
//! Two rules for every change of users and user-defined roles:
//!
//! * **Authorized when it commits.** The gate authorizes a request as it arrives, but a change
//!   of users or roles then waits for the check-then-write lock, behind other changes. One of
//!   them may take the caller's own role away (an administrator demoting another while the
//!   other grants), and a change authorized by a role that no longer holds must not commit.
//!   So [`Grantor::under_lock`] re-reads the caller's roles from the ledger (not the gate's
//!   cache) with the lock held, and authorizes the request again with them; the lock is held
//!   until the change has committed, so nothing changes those roles in between.
//! * **Nobody grants what it does not hold** (PostgreSQL's ADMIN OPTION rule). Granting or
//!   taking away a role needs every action the role allows; adding an action to a role or
//!   removing it needs that action. Otherwise `users/write` alone would make its holder an
//!   Administrator, `roles/write` alone would add every action to the holder's own role, and
//!   `users/delete` would remove administrators. Refused with 403 `InsufficientPrivileges`
//!   naming the role or actions; nothing is written.

use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::roles;
use crate::routes::RequestContext;
use crate::state::ApiState;
use std::collections::BTreeSet;

/// The caller of a user or role change, with the roles it holds as the change commits.
pub(crate) struct Grantor {
    roles: Vec<String>,
    actions: BTreeSet<String>,
}

impl Grantor {
    /// Authorizes the request of `ctx` again from the ledger's current state. Call it with
    /// `state.check_then_write` held, and keep holding it until the change has committed.
    pub(crate) fn under_lock(state: &ApiState, ctx: &RequestContext) -> ApiResult<Grantor> {
        let ledger = &*state.ledger;
        let mut record = None;
        auth::authorize(
            ledger,
            &ctx.caller,
            &ctx.method,
            &ctx.route,
            &ctx.path,
            |id| {
                record = auth::record_of(ledger, id)?;
                Ok(record.clone())
            },
        )?;
        let roles = record
            .map(|r| r.roles)
            .ok_or_else(|| ApiError::Internal("an authorized caller has no user record".into()))?;
        Ok(Grantor {
            actions: roles::actions_of(ledger, &roles)?,
            roles,
        })
    }

    /// Refuses unless the caller holds every action of each role that `user` gains or loses
    /// going from the roles `before` to `after`.
    pub(crate) fn may_change_roles(
        &self,
        state: &ApiState,
        user: &str,
        before: &[String],
        after: &[String],
    ) -> ApiResult<()> {
        let gained = after.iter().filter(|r| !before.contains(r));
        let lost = before.iter().filter(|r| !after.contains(r));
        let changes = lost
            .map(|r| (r, format!("take the role '{r}' from {user}")))
            .chain(gained.map(|r| (r, format!("give the role '{r}' to {user}"))));
        for (role, change) in changes {
            let actions = roles::role_actions(&*state.ledger, role)?.unwrap_or_default();
            let missing = self.lacking(&actions);
            if !missing.is_empty() {
                return Err(ApiError::InsufficientPrivileges(format!(
                    "You cannot {change}: it allows {}, which none of your roles ({}) allows. \
                     A user may grant or take away only roles whose every action its own roles \
                     allow; nothing was changed.",
                    missing.join(", "),
                    self.roles.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Refuses unless the caller holds every action that the role `role` gains or loses going
    /// from the actions `before` to `after`.
    pub(crate) fn may_change_actions(
        &self,
        role: &str,
        before: &[String],
        after: &[String],
    ) -> ApiResult<()> {
        let gained: Vec<String> = after
            .iter()
            .filter(|a| !before.contains(a))
            .cloned()
            .collect();
        let lost: Vec<String> = before
            .iter()
            .filter(|a| !after.contains(a))
            .cloned()
            .collect();
        self.hold_all(&gained, &format!("give the role '{role}' the action(s)"))?;
        self.hold_all(&lost, &format!("take from the role '{role}' the action(s)"))
    }

    /// Refuses unless the caller holds every action of the role `role` (`actions`), which it
    /// deletes.
    pub(crate) fn may_delete_role(&self, role: &str, actions: &[String]) -> ApiResult<()> {
        self.hold_all(
            actions,
            &format!("delete the role '{role}', which has the action(s)"),
        )
    }

    /// Refuses to `change` (worded to precede the actions) unless the caller holds `actions`.
    fn hold_all(&self, actions: &[String], change: &str) -> ApiResult<()> {
        let missing = self.lacking(actions);
        if missing.is_empty() {
            return Ok(());
        }
        Err(ApiError::InsufficientPrivileges(format!(
            "You cannot {change} {}: none of your roles ({}) allows them. A user may add to a \
             role, or take from it, only actions its own roles allow; nothing was changed.",
            missing.join(", "),
            self.roles.join(", ")
        )))
    }

    /// The `actions` this caller does not hold, in order.
    fn lacking<'a>(&self, actions: &'a [String]) -> Vec<&'a str> {
        actions
            .iter()
            .filter(|a| !self.actions.contains(*a))
            .map(String::as_str)
            .collect()
    }
}

//! Who a user is to Qlik, whichever identity provider established it: the one type the session,
//! the Qlik client and the proxy share, so none of them depends on how the user logged in.

use serde::{Deserialize, Serialize};

/// A user as Qlik knows them: user directory, user id and attributes (groups, email, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user directory (`DOMAIN` for Windows users).
    pub user_directory: String,
    /// The user id within the directory (`alice`).
    pub user_id: String,
    /// Name/value pairs passed to Qlik as session attributes (e.g. `("Group", "Sales")`).
    #[serde(default)]
    pub attributes: Vec<(String, String)>,
}

//! The engine websocket, behind the proxy or direct: proxy notifications
//! (`OnAuthenticationInformation`, fatal session messages; proxy sockets only), `OnConnected`,
//! and a small QIX JSON-RPC 2.0 engine (§4): Global, Doc (objects, `GetField`, `ClearAll`),
//! Field (`Select`, `SelectValues`, `ToggleSelect`, `Clear`, `Lock`, …) and GenericObject
//! (layouts of hypercubes, list objects and current selections; `SelectHyperCubeValues`,
//! `SelectListObjectValues`, `ClearSelections`). Selections belong to the engine session: a
//! change is listed in the caller's `change` array and pushed to the session's other sockets.

mod dispatch;
mod doc;
mod fields;
mod global;
mod messages;
mod object_data;
mod objects;
mod rpc;
mod socket;
mod upgrade;

pub(crate) use socket::run;
pub(crate) use upgrade::{engine_path, EnginePath, SocketParams};

//! Fan-out tables: for every stream, the nominated addresses of the connected
//! sessions that receive it.

use super::*;

impl Engine {
    /// Recomputes every fan-out list of a conference. Control path: allocation is fine.
    pub(super) fn rebuild_fanout(&mut self, conf: usize) {
        let Some(c) = self.conferences[conf].as_ref() else {
            return;
        };
        let members = c.members.clone();
        let mut lists: Vec<(usize, usize, Vec<SocketAddr>)> = Vec::new();
        for &sender in &members {
            let s = self.sessions[sender].as_ref().expect("member exists");
            for (k, st) in s.streams.iter().enumerate() {
                let receivers = members
                    .iter()
                    .filter(|&&r| r != sender)
                    .filter_map(|&r| self.sessions[r].as_ref())
                    .filter(|r| r.wants(&st.spec))
                    .filter_map(|r| r.addr)
                    .collect();
                lists.push((sender, k, receivers));
            }
        }
        for (sender, k, receivers) in lists {
            self.sessions[sender]
                .as_mut()
                .expect("member exists")
                .streams[k]
                .receivers = receivers;
        }
    }
}

//! Redis's memory: how full it is and what it does when full. Read by `/metrics`, `eddy status`
//! and the page, since a Redis that refuses writes stops every function at once.

/// Redis's memory use and limit, from `INFO memory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RedisMemory {
    /// `used_memory`, bytes.
    pub used: u64,
    /// `maxmemory`, bytes; 0 means no limit.
    pub max: u64,
    /// `maxmemory_policy`: anything but `noeviction` makes a full Redis delete keys (streams,
    /// retry schedules) rather than refuse writes.
    pub policy: String,
}

impl RedisMemory {
    /// Reads the two figures out of an `INFO memory` reply; a missing one reads 0.
    pub fn parse(info: &str) -> Self {
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Self {
            used: field("used_memory"),
            max: field("maxmemory"),
            policy: info
                .lines()
                .find_map(|line| line.strip_prefix("maxmemory_policy:"))
                .map(|p| p.trim().to_owned())
                .unwrap_or_default(),
        }
    }

    /// Reads `INFO memory` from `conn`. A cluster answers per node; the node nearest its limit
    /// is the one reported (it refuses writes first), and a node whose policy is not
    /// `noeviction` lends its policy, so the warning it deserves is not hidden by the others.
    pub async fn read<C: redis::aio::ConnectionLike>(conn: &mut C) -> redis::RedisResult<Self> {
        Ok(Self::of_nodes(&super::info_per_node(conn, "memory").await?))
    }

    fn of_nodes(texts: &[String]) -> Self {
        let nodes: Vec<Self> = texts.iter().map(|t| Self::parse(t)).collect();
        let fill = |m: &Self| {
            if m.max == 0 {
                0.0
            } else {
                m.used as f64 / m.max as f64
            }
        };
        let mut fullest = nodes
            .iter()
            .max_by(|a, b| fill(a).total_cmp(&fill(b)).then(a.used.cmp(&b.used)))
            .cloned()
            .unwrap_or_default();
        if let Some(odd) = nodes.iter().find(|m| m.policy != "noeviction") {
            fullest.policy = odd.policy.clone();
        }
        fullest
    }

    /// Whether writes are refused or about to be: at or above 99% of a set limit.
    pub fn full(&self) -> bool {
        self.max > 0 && self.used.saturating_mul(100) >= self.max.saturating_mul(99)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_memory_reads_info_and_knows_full() {
        let info = "# Memory\r\nused_memory:990\r\nused_memory_human:990B\r\nmaxmemory:1000\r\n\
                    maxmemory_policy:noeviction\r\n";
        let memory = RedisMemory::parse(info);
        assert_eq!((memory.used, memory.max), (990, 1000));
        assert_eq!(memory.policy, "noeviction");
        assert!(memory.full());
        let at = |used, max| RedisMemory {
            used,
            max,
            policy: String::new(),
        };
        assert!(!at(980, 1000).full());
        assert!(!at(5000, 0).full());
        assert_eq!(RedisMemory::parse("garbage"), RedisMemory::default());
    }

    #[test]
    fn a_cluster_reports_its_fullest_node_and_any_evicting_policy() {
        let node = |used: u64, max: u64, policy: &str| {
            redis::Value::BulkString(
                format!("used_memory:{used}\r\nmaxmemory:{max}\r\nmaxmemory_policy:{policy}\r\n")
                    .into_bytes(),
            )
        };
        let name = |n: &str| redis::Value::SimpleString(n.into());
        let reply = redis::Value::Map(vec![
            (name("a:1"), node(500, 1000, "noeviction")),
            (name("b:2"), node(900, 1000, "noeviction")),
            (name("c:3"), node(100, 1000, "allkeys-lru")),
        ]);
        let memory = RedisMemory::of_nodes(&crate::broker::node_texts(reply));
        assert_eq!((memory.used, memory.max), (900, 1000));
        assert_eq!(memory.policy, "allkeys-lru");
        let single = RedisMemory::of_nodes(&crate::broker::node_texts(node(7, 0, "noeviction")));
        assert_eq!(
            (single.used, single.max, single.policy.as_str()),
            (7, 0, "noeviction")
        );
    }
}

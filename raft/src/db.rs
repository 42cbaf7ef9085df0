//! Opens the node's rocksdb with the catalog's column families and options tuned for its access
//! pattern: small point reads (tags, manifests, blob records) and short prefix scans.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, DB};

use crate::keys::*;

pub type Db = Arc<DB>;

pub fn open(path: &Path) -> Result<Db, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    opts.set_bytes_per_sync(1 << 20);
    let cache = Cache::new_lru_cache(64 << 20)?;
    let cf = |name: &str| {
        let mut cf_opts = Options::default();
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        // Index and filter blocks live in the block cache (bounded memory) but partitioned: a
        // point read loads one small partition, not a whole file's index. With one index block
        // per file, a large compacted catalog made every cache miss read and decompress
        // megabytes (a retention pass over 1,000,000 images spent its time there).
        table.set_cache_index_and_filter_blocks(true);
        table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        cf_opts.set_block_based_table_factory(&table);
        ColumnFamilyDescriptor::new(name, cf_opts)
    };
    let descriptors = vec![
        cf(CF_LOGS),
        cf(CF_RAFT),
        cf(CF_SM_META),
        cf(CF_REPOS),
        cf(CF_TAGS),
        cf(CF_MANIFESTS),
        cf(CF_BLOBS),
        cf(CF_REPO_BLOBS),
        cf(CF_REFERRERS),
        cf(CF_IDENTITY),
        cf(CF_GC),
        cf(CF_CODED),
        cf(CF_PLACEMENT),
        cf(CF_IMAGES),
        cf(CF_IMAGE_TAGS),
        cf(CF_LIFECYCLE),
    ];
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, descriptors)?))
}

//! The proxy-wasm host calls the filter makes, declared against the ABI
//! directly. The SDK's own wrappers panic on any status they do not expect
//! and on header values that are not UTF-8; a panic takes the VM down, and
//! with `fail_open: false` every later request with it. Here every call
//! reports a failure as `Err`, and header maps are decoded leniently
//! (`header_pairs`), so nothing a client or an upstream sends can crash the
//! filter.

use crate::header_pairs;
use crate::shared_data::SharedData;
use std::ptr::null_mut;

/// A host call that did not succeed: its proxy-wasm status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed(pub u32);

type Status = u32;
const OK: Status = 0;
const NOT_FOUND: Status = 1;

/// Header maps (proxy-wasm `MapType`).
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum Map {
    RequestHeaders = 0,
    RequestTrailers = 1,
    ResponseHeaders = 2,
    ResponseTrailers = 3,
    CallResponseHeaders = 6,
}

/// Buffers (proxy-wasm `BufferType`).
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum Buffer {
    RequestBody = 0,
    ResponseBody = 1,
    CallResponseBody = 4,
    PluginConfiguration = 7,
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> Status;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> Status;
    fn proxy_set_tick_period_milliseconds(period: u32) -> Status;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> Status;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> Status;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize)
        -> Status;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> Status;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> Status;
    fn proxy_continue_stream(stream_type: u32) -> Status;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> Status;
    fn proxy_set_effective_context(context_id: u32) -> Status;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> Status;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> Status;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
}

fn check(status: Status) -> Result<(), Failed> {
    if status == OK {
        Ok(())
    } else {
        Err(Failed(status))
    }
}

/// Takes ownership of memory the host allocated through the SDK's
/// `proxy_on_memory_allocate` (a `Vec` of exactly `size` bytes).
///
/// # Safety
/// `data` must come from the host for this call, `size` bytes long.
unsafe fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

pub fn log(level: u32, message: &str) {
    // SAFETY: the message outlives the call.
    unsafe {
        proxy_log(level, message.as_ptr(), message.len());
    }
}

/// Milliseconds since the Unix epoch, from the host's clock (0 if it fails).
pub fn now_ms() -> u64 {
    let mut nanos = 0u64;
    // SAFETY: the host writes one u64.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut nanos) };
    if status == OK {
        nanos / 1_000_000
    } else {
        0
    }
}

pub fn set_tick_period_ms(period: u32) -> Result<(), Failed> {
    // SAFETY: plain value.
    check(unsafe { proxy_set_tick_period_milliseconds(period) })
}

/// Up to `len` bytes of a buffer from its start (empty when there is none).
pub fn buffer(buffer: Buffer, len: usize) -> Vec<u8> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the host writes a pointer it allocated and its size.
    let status = unsafe { proxy_get_buffer_bytes(buffer as u32, 0, len, &mut data, &mut size) };
    // SAFETY: whatever the status, memory the host handed over is ours.
    let bytes = unsafe { take(data, size) };
    if status == OK {
        bytes
    } else {
        Vec::new()
    }
}

/// Replaces the first `len` bytes of a buffer with `bytes`.
pub fn set_buffer(buffer: Buffer, len: usize, bytes: &[u8]) -> Result<(), Failed> {
    // SAFETY: `bytes` outlives the call.
    check(unsafe { proxy_set_buffer_bytes(buffer as u32, 0, len, bytes.as_ptr(), bytes.len()) })
}

/// Every pair of a header map (empty when the map is not available).
pub fn pairs(map: Map) -> Vec<(String, String)> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the host writes a pointer it allocated and its size.
    let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    // SAFETY: as above.
    let bytes = unsafe { take(data, size) };
    if status == OK {
        header_pairs::decode(&bytes)
    } else {
        Vec::new()
    }
}

/// Sets a header (replacing every value it had), or removes it.
pub fn set_header(map: Map, name: &str, value: Option<&str>) -> Result<(), Failed> {
    // SAFETY: name and value outlive the call.
    check(unsafe {
        match value {
            Some(value) => proxy_replace_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            ),
            None => proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()),
        }
    })
}

/// A shared-data entry: its value and version, `(None, None)` when absent
/// or unreadable.
pub fn shared_get(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: the host writes a pointer it allocated, its size and a u32.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    // SAFETY: as above.
    let bytes = unsafe { take(data, size) };
    match status {
        OK => (Some(bytes), (cas != 0).then_some(cas)),
        NOT_FOUND => (None, None),
        _ => (None, None),
    }
}

/// Writes a shared-data entry; with `cas`, only if its version is still that.
pub fn shared_set(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Failed> {
    // SAFETY: key and value outlive the call.
    check(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

/// Shared data as the core reaches it ([`SharedData`]): the key sets and
/// their leases, the authorization server's answers, the DPoP replay memory.
pub struct HostShared;

impl SharedData for HostShared {
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        shared_get(key)
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        shared_set(key, value, cas).is_ok()
    }
}

/// Resumes the request held on the current context.
pub fn resume_request() -> Result<(), Failed> {
    // SAFETY: plain value (StreamType::HttpRequest).
    check(unsafe { proxy_continue_stream(0) })
}

/// Answers the current request locally.
pub fn send_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), Failed> {
    let headers = header_pairs::encode(headers);
    // SAFETY: every buffer outlives the call.
    check(unsafe {
        proxy_send_local_response(
            status,
            null_mut(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// Starts an HTTP call through `cluster`: its token. This one goes through
/// the SDK, which must register the call to route its answer back to the
/// root context; Envoy answers it only with Ok, BadArgument or
/// InternalFailure, which the SDK reports as values.
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout_ms: u64,
) -> Result<u32, Failed> {
    proxy_wasm::hostcalls::dispatch_http_call(
        cluster,
        headers.to_vec(),
        body,
        Vec::new(),
        std::time::Duration::from_millis(timeout_ms),
    )
    .map_err(|status| Failed(status as u32))
}

pub fn set_effective_context(context_id: u32) -> Result<(), Failed> {
    // SAFETY: plain value.
    check(unsafe { proxy_set_effective_context(context_id) })
}

/// Defines a counter: its id.
pub fn define_counter(name: &str) -> Result<u32, Failed> {
    let mut id = 0u32;
    // SAFETY: the name outlives the call; the host writes one u32.
    check(unsafe { proxy_define_metric(0, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_counter(id: u32, by: i64) -> Result<(), Failed> {
    // SAFETY: plain values.
    check(unsafe { proxy_increment_metric(id, by) })
}

/// Sets a property of the current request. Envoy keeps property `name` as
/// filter state `wasm.name` (a string the rest of the chain can read); a
/// one-segment path is its name's bytes.
pub fn set_property(name: &str, value: &str) -> Result<(), Failed> {
    // SAFETY: name and value outlive the call.
    check(unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

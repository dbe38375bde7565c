//! Continue and single-step: recorded here, carried out when the session
//! returns to the unikernel (see `UkTarget::leave`). Signals cannot be
//! delivered to a unikernel and are ignored.

use super::{ResumeKind, UkTarget};
use gdbstub::common::Signal;
use gdbstub::target::ext::base::singlethread::{
    SingleThreadResume, SingleThreadSingleStep, SingleThreadSingleStepOps,
};

impl SingleThreadResume for UkTarget {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.resume = Some(ResumeKind::Continue);
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for UkTarget {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.resume = Some(ResumeKind::Step);
        Ok(())
    }
}

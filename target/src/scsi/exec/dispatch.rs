//! Dispatch of a parsed command on a logical unit: the reservation,
//! sanitize and medium gate every command passes first (SPC-5 §5.13,
//! SPC-2 §5.5, SBC-4 §4.33), then one function per command family sends
//! it to its executor in the sibling modules (`rw`, `thin`, `pages`, ...).

use super::*;

impl Ctx<'_> {
    pub(super) async fn run(&mut self, cmd: Command) -> R {
        use Command::*;
        self.gate(&cmd)?;
        match cmd {
            Read { .. }
            | Write { .. }
            | Verify { .. }
            | WriteAndVerify { .. }
            | WriteSame { .. }
            | Unmap { .. }
            | GetLbaStatus { .. }
            | CompareAndWrite { .. }
            | OrWrite { .. }
            | WriteAtomic { .. }
            | SynchronizeCache { .. }
            | PreFetch { .. }
            | Sanitize { .. }
            | ExtendedCopy { .. }
            | ReceiveCopyResults { .. } => self.run_block(cmd).await,
            StartStopUnit { .. }
            | PreventAllowMediumRemoval { .. }
            | Reserve6
            | Reserve10
            | Release6
            | Release10
            | PersistentReserveIn { .. }
            | PersistentReserveOut { .. } => self.run_state(cmd).await,
            _ => self.run_info(cmd),
        }
    }

    /// Reservations (SPC-5 §5.13.1, SPC-2 §5.5.1), a sanitize in progress
    /// and a missing medium, checked before any command runs.
    fn gate(&self, cmd: &Command) -> Result<(), Fail> {
        use Command::*;
        let st = self.lu.state();
        if !legacy_exempt(cmd) && st.res.legacy_conflicts(self.nexus) {
            return Err(Fail::Status(Status::RESERVATION_CONFLICT));
        }
        if st.res.conflicts(self.nexus, pr_access(cmd)) {
            return Err(Fail::Status(Status::RESERVATION_CONFLICT));
        }
        if st.sanitizing
            && !matches!(
                cmd,
                Inquiry { .. } | ReportLuns { .. } | RequestSense { .. }
            )
        {
            return Err(st.sanitize_in_progress().into());
        }
        if self.lu.cfg.removable && !st.medium_present && needs_medium(cmd) {
            return Err(Sense::new(SenseKey::NOT_READY, Asc::MEDIUM_NOT_PRESENT).into());
        }
        Ok(())
    }

    /// Reads, writes and the other block commands (SBC-4 §5), copy and sanitize.
    async fn run_block(&mut self, cmd: Command) -> R {
        use Command::*;
        match cmd {
            Read { size, rw } => self.read(size, rw).await,
            Write { size, rw } => self.write(size, rw).await,
            Verify { size, rw, bytchk } => self.verify(size, rw, bytchk).await,
            WriteAndVerify { size, rw, bytchk } => self.write_and_verify(size, rw, bytchk).await,
            WriteSame {
                size,
                lba,
                blocks,
                unmap,
                ndob,
                ..
            } => self.write_same(size, lba, blocks, unmap, ndob).await,
            Unmap { param_len, .. } => self.unmap(param_len).await,
            GetLbaStatus { lba, alloc_len } => self.get_lba_status(lba, alloc_len).await,
            CompareAndWrite { rw } => self.compare_and_write(rw).await,
            OrWrite { rw } => self.or_write(rw).await,
            WriteAtomic { rw, boundary } => self.write_atomic(rw, boundary).await,
            SynchronizeCache {
                size, lba, blocks, ..
            } => {
                self.check_range(size, lba, blocks, true)?;
                self.flush().await?;
                Ok(Bytes::new())
            }
            PreFetch {
                size, lba, blocks, ..
            } => {
                // No cache to load: GOOD (SBC-4 §5.9: CONDITION MET only when
                // the blocks fit a cache).
                self.check_range(size, lba, blocks, true)?;
                Ok(Bytes::new())
            }
            Sanitize {
                service_action,
                param_len,
                ause,
                immed,
            } => self.sanitize(service_action, param_len, ause, immed).await,
            ExtendedCopy { param_len } => self.extended_copy(param_len).await,
            ReceiveCopyResults {
                service_action,
                list_id,
                alloc_len,
            } => self.receive_copy_results(service_action, list_id, alloc_len),
            // `run` sends only this family here.
            _ => Err(invalid_cdb(0, None)),
        }
    }

    /// Start/stop, medium removal and reservations (SBC-4, SPC-5 §5.13).
    async fn run_state(&mut self, cmd: Command) -> R {
        use Command::*;
        match cmd {
            StartStopUnit {
                power_condition,
                loej,
                start,
                ..
            } => self.start_stop(power_condition, loej, start).await,
            PreventAllowMediumRemoval { prevent } => {
                let mut st = self.lu.state();
                match prevent {
                    0 => {
                        st.prevent.remove(self.nexus);
                    }
                    1 => {
                        st.prevent.insert(self.nexus.clone());
                    }
                    // 10b/11b are obsolete for direct-access devices.
                    _ => return Err(invalid_cdb(4, Some(1))),
                }
                Ok(Bytes::new())
            }
            Reserve6 | Reserve10 => {
                self.lu
                    .state()
                    .res
                    .reserve_legacy(self.nexus)
                    .map_err(|_| Fail::Status(Status::RESERVATION_CONFLICT))?;
                Ok(Bytes::new())
            }
            Release6 | Release10 => {
                self.lu
                    .state()
                    .res
                    .release_legacy(self.nexus)
                    .map_err(|_| Fail::Status(Status::RESERVATION_CONFLICT))?;
                Ok(Bytes::new())
            }
            PersistentReserveIn {
                service_action,
                alloc_len,
            } => self.prin(service_action, alloc_len),
            PersistentReserveOut {
                service_action,
                scope,
                pr_type,
                param_len,
            } => self.prout(service_action, scope, pr_type, param_len).await,
            // `run` sends only this family here.
            _ => Err(invalid_cdb(0, None)),
        }
    }

    /// Inquiry, sense, capacity, mode pages and the other informational commands.
    fn run_info(&mut self, cmd: Command) -> R {
        use Command::*;
        match cmd {
            TestUnitReady => Ok(Bytes::new()),
            RequestSense { desc, alloc_len } => self.request_sense(desc, alloc_len),
            Inquiry {
                evpd,
                page_code,
                alloc_len,
            } => self.inquiry(evpd, page_code, alloc_len),
            ReportLuns {
                select_report,
                alloc_len,
            } => self.report_luns(select_report, alloc_len),
            ReadCapacity10 => Ok(self.read_capacity10()),
            ReadCapacity16 { alloc_len } => Ok(self.read_capacity16(alloc_len)),
            ModeSense {
                size,
                dbd,
                llbaa,
                pc,
                page,
                subpage,
                alloc_len,
            } => self.mode_sense(
                size == CdbSize::Ten,
                dbd,
                llbaa,
                pc,
                page,
                subpage,
                alloc_len,
            ),
            ModeSelect {
                size,
                pf,
                sp,
                param_len,
            } => self.mode_select(size == CdbSize::Ten, pf, sp, param_len),
            ReportSupportedOpcodes {
                rctd,
                options,
                opcode,
                service_action,
                alloc_len,
            } => pages::report_supported_opcodes(
                self.lu,
                rctd,
                options,
                opcode,
                service_action,
                alloc_len,
            ),
            ReportSupportedTmfs { repd, alloc_len } => {
                Ok(pages::report_supported_tmfs(repd, alloc_len))
            }
            ReadDefectData {
                size,
                format,
                alloc_len,
                ..
            } => Ok(pages::read_defect_data(
                size == CdbSize::Twelve,
                format,
                alloc_len,
            )),
            // `run` sends only this family here.
            _ => Err(invalid_cdb(0, None)),
        }
    }
}
